-- `audit`: who changed what, and every refused admin call. `caller` is the token's name
-- ("anonymous" on a registry without tokens), `role` its role ('' when no valid token was
-- presented), `source` the caller's address, `method` the Admin call (its gRPC method), `target` what it
-- acted on (APP.SERVER, a node, a package, a secret's name; never a secret's value),
-- `outcome` 'ok', 'refused' or 'failed', `error` the message of a refusal or failure.
-- Only the newest rows are kept (crate::audit).
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   BIGINT  NOT NULL,
    caller  TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    source  TEXT    NOT NULL,
    method  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    error   TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
CREATE INDEX audit_caller ON audit (caller, id);
