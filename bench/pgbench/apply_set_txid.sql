\set id random(1, 10000)
\set n random(1, 1000000)
SELECT rowsync.apply(('{"id": "' || gen_random_uuid() || '", "ops": [{"type": "set", "table": "synced", "id": ' || :id || ', "key": "n", "value": ' || :n || '}]}')::jsonb);
