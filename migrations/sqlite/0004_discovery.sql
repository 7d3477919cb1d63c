-- Ports held on each node: fixed ones from specs and "auto" ones the registry allocated.
-- The unique key is what makes two instances on one node never share a port.
CREATE TABLE instance_ports (
    app     TEXT   NOT NULL,
    server  TEXT   NOT NULL,
    node    TEXT   NOT NULL,
    adapter TEXT   NOT NULL,
    port    BIGINT NOT NULL,
    PRIMARY KEY (app, server, node, adapter)
);

CREATE UNIQUE INDEX instance_ports_node_port ON instance_ports (node, port);

-- The agent's health verdict: healthy, unhealthy, unknown, or '' (no check).
ALTER TABLE instances ADD COLUMN health TEXT NOT NULL DEFAULT '';
-- Where the agent keeps its data, for the `instance_dir` template variable.
ALTER TABLE nodes ADD COLUMN data_dir TEXT NOT NULL DEFAULT '';
