-- Convergent config templates, ordinals and spec drift.
--
-- `instances.ordinal`: a stable number per instance, 0-based within its server, kept for
-- the instance's life; a new instance takes the lowest free number.
-- `instances.config_restart_at_ms`: when the registry last delivered a config change that
-- restarts the instance (on_change = "restart"); the next instance of the server waits
-- for this one to be healthy again. `instances.config_hold`: the template whose changes
-- restarted the instance too often (config_flapping); its changes are held until the
-- next apply or restart.
-- `instance_configs`: the rendered config files delivered to each instance: what its
-- agent is told to write. `fingerprint` names the spec they were rendered for.
-- `servers.applied_spec`: the spec as last applied with `registry apply`; the live spec
-- differs from it after expand, patch, rollback or undeploy (drift).
-- `leases`: a named job that one replica at a time runs (the config renderer).
ALTER TABLE instances ADD COLUMN ordinal BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN config_restart_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN config_hold TEXT NOT NULL DEFAULT '';

UPDATE instances SET ordinal = (
    SELECT COUNT(*) FROM instances i2
    WHERE i2.app = instances.app AND i2.server = instances.server AND i2.node < instances.node
);

CREATE UNIQUE INDEX instances_ordinal ON instances (app, server, ordinal);

CREATE TABLE instance_configs (
    app           TEXT   NOT NULL,
    server        TEXT   NOT NULL,
    node          TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    content       TEXT   NOT NULL,
    fingerprint   TEXT   NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (app, server, node, name)
);

ALTER TABLE servers ADD COLUMN applied_spec TEXT NOT NULL DEFAULT '';
UPDATE servers SET applied_spec = spec;

CREATE TABLE leases (
    name     TEXT   NOT NULL PRIMARY KEY,
    owner    TEXT   NOT NULL,
    until_ms BIGINT NOT NULL
);
