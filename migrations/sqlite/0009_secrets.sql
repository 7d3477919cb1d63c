-- `secrets`: per-instance secret values, sealed with the registry's key (ChaCha20-Poly1305;
-- `sealed` is hex of nonce || ciphertext || tag, bound to the row's app, server, name and
-- scope). `scope` is 'all', 'node' or 'ordinal'; `target` the node name or the ordinal
-- ('' for 'all'). `version` grows with every put of the name, whatever the scope.
-- `secret_key_check`: one value sealed with the key the secrets are sealed with, so a
-- registry started with another key refuses to start instead of serving garbage.
-- `instance_configs.sealed`: 1 when `content` is sealed (a file holding a secret).
CREATE TABLE secrets (
    app           TEXT   NOT NULL,
    server        TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    scope         TEXT   NOT NULL,
    target        TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    sealed        TEXT   NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (app, server, name, scope, target)
);

CREATE TABLE secret_key_check (
    id     BIGINT NOT NULL PRIMARY KEY,
    sealed TEXT   NOT NULL
);

ALTER TABLE instance_configs ADD COLUMN sealed BIGINT NOT NULL DEFAULT 0;
