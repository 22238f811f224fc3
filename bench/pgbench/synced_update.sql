\set id random(1, 10000)
UPDATE bench.synced SET n = n + 1 WHERE id = :id;
