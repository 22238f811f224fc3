-- The original design's write path, written by hand: lock and read the row, check its
-- version, write it with version + 1, append to an outbox, notify.
\set id random(1, 10000)
\set n random(1, 1000000)
BEGIN;
SELECT version FROM bench.hand WHERE id = :id FOR UPDATE;
UPDATE bench.hand SET n = :n, version = version + 1 WHERE id = :id;
INSERT INTO bench.hand_outbox (row_id) VALUES (:id);
SELECT pg_notify('hand', :id::text);
COMMIT;
