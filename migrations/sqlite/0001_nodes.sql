-- Nodes: one row per host that has joined. `identity_hash` is the sha256 (hex) of the
-- secret the registry issued at first join; the secret itself is never stored.
-- `session_id` names the session that last set the row `up`, so a closing session marks
-- the node down only if no newer session (on any replica) has replaced it.
CREATE TABLE nodes (
    name              TEXT    NOT NULL PRIMARY KEY,
    identity_hash     TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    address           TEXT    NOT NULL,
    agent_version     TEXT    NOT NULL,
    hostname          TEXT    NOT NULL,
    os                TEXT    NOT NULL,
    kernel            TEXT    NOT NULL,
    cpu_cores         BIGINT  NOT NULL,
    memory_bytes      BIGINT  NOT NULL,
    disk_bytes        BIGINT  NOT NULL,
    cpu_percent       DOUBLE  NOT NULL DEFAULT 0,
    load1             DOUBLE  NOT NULL DEFAULT 0,
    load5             DOUBLE  NOT NULL DEFAULT 0,
    load15            DOUBLE  NOT NULL DEFAULT 0,
    memory_used_bytes BIGINT  NOT NULL DEFAULT 0,
    disk_free_bytes   BIGINT  NOT NULL DEFAULT 0,
    has_load          BIGINT  NOT NULL DEFAULT 0,
    last_seen_ms      BIGINT  NOT NULL,
    joined_at_ms      BIGINT  NOT NULL,
    connected_at_ms   BIGINT  NOT NULL,
    session_id        BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX nodes_state ON nodes (state);
