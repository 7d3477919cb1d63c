-- Servers (one spec each), their instances (one per node) and the events of instances.
--
-- `servers.spec` is the checked spec as JSON. `instances` holds both halves of an
-- instance: the desired one (desired, restart_counter), written by admin calls, and the
-- actual one (state ... reported_at_ms), written when the agent reports.
CREATE TABLE servers (
    app            VARCHAR(63) NOT NULL,
    server         VARCHAR(63) NOT NULL,
    spec           MEDIUMTEXT  NOT NULL,
    created_at_ms  BIGINT      NOT NULL,
    updated_at_ms  BIGINT      NOT NULL,
    PRIMARY KEY (app, server)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE instances (
    app             VARCHAR(63)   NOT NULL,
    server          VARCHAR(63)   NOT NULL,
    node            VARCHAR(63)   NOT NULL,
    desired         VARCHAR(16)   NOT NULL,
    restart_counter BIGINT        NOT NULL DEFAULT 0,
    state           VARCHAR(32)   NOT NULL DEFAULT 'pending',
    pid             BIGINT        NOT NULL DEFAULT 0,
    restarts        BIGINT        NOT NULL DEFAULT 0,
    started_at_ms   BIGINT        NOT NULL DEFAULT 0,
    last_exit       VARCHAR(255)  NOT NULL DEFAULT '',
    last_error      VARCHAR(2048) NOT NULL DEFAULT '',
    version         VARCHAR(128)  NOT NULL DEFAULT '',
    reported_at_ms  BIGINT        NOT NULL DEFAULT 0,
    PRIMARY KEY (app, server, node),
    INDEX instances_node (node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE events (
    id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms       BIGINT        NOT NULL,
    app         VARCHAR(63)   NOT NULL,
    server      VARCHAR(63)   NOT NULL,
    node        VARCHAR(63)   NOT NULL,
    from_state  VARCHAR(32)   NOT NULL,
    to_state    VARCHAR(32)   NOT NULL,
    reason      VARCHAR(2048) NOT NULL,
    INDEX events_server (app, server, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
