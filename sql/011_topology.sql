-- 011: topology views and the impact function (what breaks if an address goes down).

-- One row per address with how many dependencies it serves and consumes.
CREATE OR REPLACE VIEW flowlens.topology_nodes AS
SELECT a.addr, a.name, a.hostname, a.known, a.environment, a.owner, a.first_seen, a.last_seen,
       (SELECT count(*) FROM flowlens.dependencies d WHERE d.server_addr = a.addr) AS serves,
       (SELECT count(*) FROM flowlens.dependencies d WHERE d.client_addr = a.addr) AS consumes
FROM flowlens.assets a;

-- One row per dependency edge with the names of both ends (client -> server:port/protocol).
CREATE OR REPLACE VIEW flowlens.topology_edges AS
SELECT d.client_addr, c.name AS client_name, c.hostname AS client_hostname,
       d.server_addr, s.name AS server_name, s.hostname AS server_hostname,
       d.server_port, d.protocol, d.first_seen, d.last_seen, d.first_window, d.last_window
FROM flowlens.dependencies d
LEFT JOIN flowlens.assets c ON c.addr = d.client_addr
LEFT JOIN flowlens.assets s ON s.addr = d.server_addr;

-- Everything that depends, directly or transitively (up to max_depth hops), on `target`:
-- clients of its services, then clients of those clients' services, and so on.
CREATE OR REPLACE FUNCTION flowlens.impact(target inet, max_depth integer DEFAULT 3)
RETURNS TABLE (addr inet, depth integer, via_server inet, server_port integer, protocol smallint)
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE affected(addr, depth, via_server, server_port, protocol, path) AS (
        SELECT d.client_addr, 1, d.server_addr, d.server_port, d.protocol, ARRAY[target, d.client_addr]
        FROM flowlens.dependencies d
        WHERE d.server_addr = target AND d.client_addr <> target
        UNION ALL
        SELECT d.client_addr, a.depth + 1, d.server_addr, d.server_port, d.protocol, a.path || d.client_addr
        FROM affected a
        JOIN flowlens.dependencies d ON d.server_addr = a.addr
        WHERE a.depth < max_depth AND NOT d.client_addr = ANY (a.path)
    )
    SELECT DISTINCT ON (addr) addr, depth, via_server, server_port, protocol
    FROM affected
    ORDER BY addr, depth, via_server, server_port, protocol
$$;
