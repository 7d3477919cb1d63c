-- Packages, stored in the database in chunks so every replica can serve them, and
-- rollouts. A package row is 'uploading' until its last chunk is in and every check
-- passed; only 'ready' packages are listed, deployed or downloaded.
CREATE TABLE packages (
    app           VARCHAR(63)   NOT NULL,
    server        VARCHAR(63)   NOT NULL,
    version       VARCHAR(63)   NOT NULL,
    sha256        VARCHAR(64)   NOT NULL,
    size          BIGINT        NOT NULL,
    note          VARCHAR(1024) NOT NULL,
    entries       BIGINT        NOT NULL DEFAULT 0,
    chunk_size    BIGINT        NOT NULL,
    state         VARCHAR(16)   NOT NULL,
    created_at_ms BIGINT        NOT NULL,
    PRIMARY KEY (app, server, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE package_chunks (
    app     VARCHAR(63) NOT NULL,
    server  VARCHAR(63) NOT NULL,
    version VARCHAR(63) NOT NULL,
    seq     BIGINT      NOT NULL,
    data    MEDIUMBLOB  NOT NULL,
    PRIMARY KEY (app, server, version, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The release each instance should run (desired), the one to download ahead of time
-- (rollouts), and the agent's report of its last install.
ALTER TABLE instances
    ADD COLUMN desired_version  VARCHAR(63)   NOT NULL DEFAULT '',
    ADD COLUMN prefetch_version VARCHAR(63)   NOT NULL DEFAULT '',
    ADD COLUMN install_version  VARCHAR(63)   NOT NULL DEFAULT '',
    ADD COLUMN install_state    VARCHAR(16)   NOT NULL DEFAULT '',
    ADD COLUMN install_percent  BIGINT        NOT NULL DEFAULT 0,
    ADD COLUMN install_error    VARCHAR(2048) NOT NULL DEFAULT '';

CREATE TABLE rollouts (
    id             BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    app            VARCHAR(63)   NOT NULL,
    server         VARCHAR(63)   NOT NULL,
    from_version   VARCHAR(63)   NOT NULL,
    to_version     VARCHAR(63)   NOT NULL,
    state          VARCHAR(16)   NOT NULL,
    error          VARCHAR(2048) NOT NULL DEFAULT '',
    batch          BIGINT        NOT NULL,
    min_healthy_ms BIGINT        NOT NULL,
    deadline_ms    BIGINT        NOT NULL,
    created_at_ms  BIGINT        NOT NULL,
    updated_at_ms  BIGINT        NOT NULL,
    -- The replica driving it, and until when; another replica takes over after that.
    owner          VARCHAR(64)   NOT NULL DEFAULT '',
    lease_until_ms BIGINT        NOT NULL DEFAULT 0,
    INDEX rollouts_server (app, server, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE rollout_instances (
    rollout_id        BIGINT        NOT NULL,
    node              VARCHAR(63)   NOT NULL,
    batch             BIGINT        NOT NULL,
    from_version      VARCHAR(63)   NOT NULL,
    phase             VARCHAR(16)   NOT NULL,
    percent           BIGINT        NOT NULL DEFAULT 0,
    error             VARCHAR(2048) NOT NULL DEFAULT '',
    switched_at_ms    BIGINT        NOT NULL DEFAULT 0,
    healthy_since_ms  BIGINT        NOT NULL DEFAULT 0,
    PRIMARY KEY (rollout_id, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
