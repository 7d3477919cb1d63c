-- Replicas and the sessions they hold, so that any replica can forward a call about a
-- node (`registry logs`) to the replica holding the node's session.
-- Each running replica's gRPC address, refreshed every few seconds.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    seen_ms BIGINT NOT NULL
);
-- The replica a node's session (`nodes.session_id`) is open on.
CREATE TABLE session_replicas (
    node TEXT PRIMARY KEY,
    session_id BIGINT NOT NULL,
    replica TEXT NOT NULL
);
