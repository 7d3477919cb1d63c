-- Convergent config templates, ordinals and spec drift (see the SQLite migration of the
-- same number for what each column is for).
ALTER TABLE instances ADD COLUMN ordinal BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN config_restart_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN config_hold VARCHAR(255) NOT NULL DEFAULT '';

UPDATE instances i JOIN (
    SELECT app, server, node,
           ROW_NUMBER() OVER (PARTITION BY app, server ORDER BY node) - 1 AS o
    FROM instances
) x ON x.app = i.app AND x.server = i.server AND x.node = i.node
SET i.ordinal = x.o;

CREATE UNIQUE INDEX instances_ordinal ON instances (app, server, ordinal);

CREATE TABLE instance_configs (
    app           VARCHAR(63)  NOT NULL,
    server        VARCHAR(63)  NOT NULL,
    node          VARCHAR(63)  NOT NULL,
    name          VARCHAR(255) NOT NULL,
    content       MEDIUMTEXT   NOT NULL,
    fingerprint   VARCHAR(64)  NOT NULL,
    updated_at_ms BIGINT       NOT NULL,
    PRIMARY KEY (app, server, node, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE servers ADD COLUMN applied_spec MEDIUMTEXT NOT NULL;
UPDATE servers SET applied_spec = spec;

CREATE TABLE leases (
    name     VARCHAR(63) NOT NULL PRIMARY KEY,
    owner    VARCHAR(63) NOT NULL,
    until_ms BIGINT      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
