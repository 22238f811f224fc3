\set id :client_id * 625 + random(1, 625)
\set n random(1, 1000000)
-- The expected version is the row's, read in the same statement, and every client has
-- rows of its own (16 × 625): the check runs and passes, and no other client moves the
-- version in between.
SELECT rowsync.apply(('{"ops": [{"type": "set", "table": "synced", "id": ' || :id || ', "key": "n", "value": ' || :n
       || ', "version": ' || (SELECT s.version FROM bench.synced s WHERE s.id = :id) || '}]}')::jsonb);
