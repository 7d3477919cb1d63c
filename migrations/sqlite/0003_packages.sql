-- Packages, stored in the database in chunks so every replica can serve them, and
-- rollouts. A package row is 'uploading' until its last chunk is in and every check
-- passed; only 'ready' packages are listed, deployed or downloaded.
CREATE TABLE packages (
    app           TEXT   NOT NULL,
    server        TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    sha256        TEXT   NOT NULL,
    size          BIGINT NOT NULL,
    note          TEXT   NOT NULL,
    entries       BIGINT NOT NULL DEFAULT 0,
    chunk_size    BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (app, server, version)
);

CREATE TABLE package_chunks (
    app     TEXT   NOT NULL,
    server  TEXT   NOT NULL,
    version TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    data    BLOB   NOT NULL,
    PRIMARY KEY (app, server, version, seq)
);

-- The release each instance should run (desired), the one to download ahead of time
-- (rollouts), and the agent's report of its last install.
ALTER TABLE instances ADD COLUMN desired_version  TEXT   NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN prefetch_version TEXT   NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN install_version  TEXT   NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN install_state    TEXT   NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN install_percent  BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN install_error    TEXT   NOT NULL DEFAULT '';

CREATE TABLE rollouts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    app            TEXT   NOT NULL,
    server         TEXT   NOT NULL,
    from_version   TEXT   NOT NULL,
    to_version     TEXT   NOT NULL,
    state          TEXT   NOT NULL,
    error          TEXT   NOT NULL DEFAULT '',
    batch          BIGINT NOT NULL,
    min_healthy_ms BIGINT NOT NULL,
    deadline_ms    BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    -- The replica driving it, and until when; another replica takes over after that.
    owner          TEXT   NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX rollouts_server ON rollouts (app, server, id);

CREATE TABLE rollout_instances (
    rollout_id        BIGINT NOT NULL,
    node              TEXT   NOT NULL,
    batch             BIGINT NOT NULL,
    from_version      TEXT   NOT NULL,
    phase             TEXT   NOT NULL,
    percent           BIGINT NOT NULL DEFAULT 0,
    error             TEXT   NOT NULL DEFAULT '',
    switched_at_ms    BIGINT NOT NULL DEFAULT 0,
    healthy_since_ms  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, node)
);
