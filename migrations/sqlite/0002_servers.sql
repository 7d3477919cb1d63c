-- Servers (one spec each), their instances (one per node) and the events of instances.
--
-- `servers.spec` is the checked spec as JSON. `instances` holds both halves of an
-- instance: the desired one (desired, restart_counter), written by admin calls, and the
-- actual one (state ... reported_at_ms), written when the agent reports.
CREATE TABLE servers (
    app            TEXT   NOT NULL,
    server         TEXT   NOT NULL,
    spec           TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (app, server)
);

CREATE TABLE instances (
    app             TEXT   NOT NULL,
    server          TEXT   NOT NULL,
    node            TEXT   NOT NULL,
    desired         TEXT   NOT NULL,
    restart_counter BIGINT NOT NULL DEFAULT 0,
    state           TEXT   NOT NULL DEFAULT 'pending',
    pid             BIGINT NOT NULL DEFAULT 0,
    restarts        BIGINT NOT NULL DEFAULT 0,
    started_at_ms   BIGINT NOT NULL DEFAULT 0,
    last_exit       TEXT   NOT NULL DEFAULT '',
    last_error      TEXT   NOT NULL DEFAULT '',
    version         TEXT   NOT NULL DEFAULT '',
    reported_at_ms  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app, server, node)
);

CREATE INDEX instances_node ON instances (node);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    app         TEXT   NOT NULL,
    server      TEXT   NOT NULL,
    node        TEXT   NOT NULL,
    from_state  TEXT   NOT NULL,
    to_state    TEXT   NOT NULL,
    reason      TEXT   NOT NULL
);

CREATE INDEX events_server ON events (app, server, id);
