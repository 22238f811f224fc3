-- Each refusal has its own SQLSTATE, a message, a detail and a hint; nothing is applied.
CREATE FUNCTION pg_temp.attempt(tx jsonb)
RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rowsync.apply(tx);
    RETURN QUERY SELECT '00000'::text, 'applied'::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
        detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END
$$;
SET ROLE app_user;
SET request.jwt.claims = '{"sub": "bob"}';
\x on

-- RS409: the op was based on another version.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "key": "title", "value": "x", "version": 7}]}');
-- RS404: a row bob cannot see answers like a row that does not exist.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000004", "key": "title", "value": "x"}]}');
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-0000000000ff", "key": "title", "value": "x"}]}');
-- RS001: a malformed op, with its index and field.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "key": "title", "value": "x"}, {"type": "rename", "table": "tasks", "id": "x"}]}');
-- RS002, RS003, RS004: unknown table, unknown column, a value of the wrong type.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "projects", "id": "1", "key": "title", "value": "x"}]}');
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "key": "priority", "value": 1}]}');
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "key": "tags", "value": "a,b"}]}');
-- 42501: row-level security refuses the new row (bob is not a member of Alice's notes),
-- and a viewer may not change what she sees.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "create", "table": "tasks", "id": "00000000-0000-4000-8000-0000000000e2", "value": {"board_id": "00000000-0000-4000-8000-0000000000b2"}}]}');
SET request.jwt.claims = '{"sub": "carol"}';
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "key": "title", "value": "x"}]}');
SET request.jwt.claims = '{"sub": "bob"}';
-- 23505: create on a taken id.
SELECT * FROM pg_temp.attempt('{"ops": [{"type": "create", "table": "tasks", "id": "00000000-0000-4000-8000-000000000002", "value": {"board_id": "00000000-0000-4000-8000-0000000000b1"}}]}');
-- Nothing above changed the task.
SELECT title, version FROM app.tasks WHERE id = '00000000-0000-4000-8000-000000000002';
