-- The demo's policies on app.tasks as they were written before Feed v2 (ddbb1bd): helper
-- functions with a pinned search_path, one SECURITY DEFINER lookup per row. Loaded over
-- sql/demo.sql to compare with the per-statement pattern it now uses.
CREATE FUNCTION app.board_role(board uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.role FROM app.board_members m WHERE m.board_id = board AND m.user_id = rowsync.user_id()
$$;
CREATE FUNCTION app.is_member(board uuid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT app.board_role(board) IS NOT NULL
$$;
DROP POLICY tasks_read ON app.tasks;
CREATE POLICY tasks_read ON app.tasks FOR SELECT TO app_user USING (app.is_member(board_id));
