BEGIN;
SELECT set_config('role', 'app_user', true), set_config('request.jwt.claims', '{"sub": "bob"}', true);
SELECT rowsync.get('[{"table": "tasks", "id": "00000000-0000-4000-8000-000000000001"}]');
COMMIT;
