-- The change feed: every replica appends a row when it changes a node's desired state
-- (node set) or something discovery depends on (kind 'discovery'); every replica follows
-- the rows it did not write, so agents and watchers connected to any replica hear of
-- every change. Rows are trimmed after a few minutes.
CREATE TABLE changes (
    id    BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms BIGINT      NOT NULL,
    node  VARCHAR(63) NOT NULL,
    kind  VARCHAR(16) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
