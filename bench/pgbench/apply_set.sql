\set id random(1, 10000)
\set n random(1, 1000000)
SELECT rowsync.apply(('{"ops": [{"type": "set", "table": "synced", "id": ' || :id || ', "key": "n", "value": ' || :n || '}]}')::jsonb);
