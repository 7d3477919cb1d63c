-- Ports held on each node: fixed ones from specs and "auto" ones the registry allocated.
-- The unique key is what makes two instances on one node never share a port.
CREATE TABLE instance_ports (
    app     VARCHAR(63) NOT NULL,
    server  VARCHAR(63) NOT NULL,
    node    VARCHAR(63) NOT NULL,
    adapter VARCHAR(63) NOT NULL,
    port    BIGINT      NOT NULL,
    PRIMARY KEY (app, server, node, adapter),
    UNIQUE INDEX instance_ports_node_port (node, port)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The agent's health verdict: healthy, unhealthy, unknown, or '' (no check).
ALTER TABLE instances ADD COLUMN health VARCHAR(16) NOT NULL DEFAULT '';
-- Where the agent keeps its data, for the `instance_dir` template variable.
ALTER TABLE nodes ADD COLUMN data_dir VARCHAR(1024) NOT NULL DEFAULT '';
