-- 043: dependencies had two indexes by server (001's dependencies_server and 030's
-- dependencies_server_clients, the same columns plus the client). Every key a window merges in is
-- written into each of them in random order; the covering one serves every lookup by server
-- (a btree's leading columns), so the narrower one only cost the window's merge.
DROP INDEX IF EXISTS flowlens.dependencies_server;
