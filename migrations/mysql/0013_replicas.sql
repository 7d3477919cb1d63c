-- Replicas and the sessions they hold, so that any replica can forward a call about a
-- node (`registry logs`) to the replica holding the node's session.
-- Each running replica's gRPC address, refreshed every few seconds.
CREATE TABLE replicas (
    id VARCHAR(64) PRIMARY KEY,
    address VARCHAR(512) NOT NULL,
    seen_ms BIGINT NOT NULL
);
-- The replica a node's session (`nodes.session_id`) is open on.
CREATE TABLE session_replicas (
    node VARCHAR(63) PRIMARY KEY,
    session_id BIGINT NOT NULL,
    replica VARCHAR(64) NOT NULL
);
