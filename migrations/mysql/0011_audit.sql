-- `audit`: who changed what, and every refused admin call. `caller` is the token's name
-- ("anonymous" on a registry without tokens), `role` its role ('' when no valid token was
-- presented), `source` the caller's address, `method` the Admin call (its gRPC method), `target` what it
-- acted on (APP.SERVER, a node, a package, a secret's name; never a secret's value),
-- `outcome` 'ok', 'refused' or 'failed', `error` the message of a refusal or failure.
-- Only the newest rows are kept (crate::audit).
CREATE TABLE audit (
    id      BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms   BIGINT        NOT NULL,
    caller  VARCHAR(255)  NOT NULL,
    role    VARCHAR(16)   NOT NULL,
    source  VARCHAR(64)   NOT NULL,
    method  VARCHAR(64)   NOT NULL,
    target  VARCHAR(512)  NOT NULL,
    outcome VARCHAR(16)   NOT NULL,
    error   VARCHAR(2048) NOT NULL,
    INDEX audit_at (at_ms),
    INDEX audit_caller (caller, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
