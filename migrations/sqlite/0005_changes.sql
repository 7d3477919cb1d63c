-- The change feed: every replica appends a row when it changes a node's desired state
-- (node set) or something discovery depends on (kind 'discovery'); every replica follows
-- the rows it did not write, so agents and watchers connected to any replica hear of
-- every change. Rows are trimmed after a few minutes.
CREATE TABLE changes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    node  TEXT   NOT NULL,
    kind  TEXT   NOT NULL
);
