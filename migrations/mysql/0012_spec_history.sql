-- `spec_versions`: the history of every server's spec. Each apply, expand, patch,
-- rollback, undeploy of some nodes and revert that changes the live spec stores one
-- version, in the transaction of the change: `version` counts up per server (1, 2, 3 ...)
-- and is never reused, not after pruning (the newest 50 are kept) nor after the server
-- is removed and created again (its history is kept). `spec_toml` is the spec as
-- `registry server export` renders it (canonical, so versions diff line by line);
-- `action` what made it ('apply', 'expand', 'patch', 'rollback', 'undeploy',
-- 'revert to 3'); `summary` a short line for listings (release, instance count).
-- `rollouts.kind`: 'patch' or 'rollback', the action the rollout's end records.
CREATE TABLE spec_versions (
    app       VARCHAR(63)  NOT NULL,
    server    VARCHAR(63)  NOT NULL,
    version   BIGINT       NOT NULL,
    at_ms     BIGINT       NOT NULL,
    action    VARCHAR(64)  NOT NULL,
    summary   VARCHAR(255) NOT NULL,
    spec_toml MEDIUMTEXT   NOT NULL,
    PRIMARY KEY (app, server, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE rollouts ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'patch';
