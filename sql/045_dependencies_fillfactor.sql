-- 045: every window updates the last seen/window of most edges it merges (assets/topology.py). Those
-- columns are in no index, so PostgreSQL can update a row in place on its page (a HOT update: no
-- index entry written) when the page has room; with full pages each update wrote a new entry into
-- all three indexes. Half-empty pages leave room for one new version of each row, and the versions
-- of the window before are pruned from the page once it commits. Measured on 1M edges merged three
-- windows in a row (same session): fillfactor 100: 6.7, 22.5, 19.0 s (0% HOT); 50: 6.7, 4.0, 4.4 s
-- (98% HOT); 70: 5.8, 10.0, 8.0 s. The table takes up to twice the space. Pages written before 045
-- keep their fill until their rows move (an update that does not fit lands on a new page).
ALTER TABLE flowlens.dependencies SET (fillfactor = 50);
