-- Whether the node's agent runs instances in cgroups (1) and so takes a spec's
-- [resources], with where (or why not) in `cgroups_note`; and what each instance uses,
-- from its cgroup, as of the last heartbeat written (JSON, a list of InstanceUsage).
ALTER TABLE nodes ADD COLUMN cgroups BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN cgroups_note TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN instance_usage TEXT NOT NULL DEFAULT '';
