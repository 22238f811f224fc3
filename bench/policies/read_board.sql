BEGIN;
SELECT set_config('role', 'app_user', true), set_config('request.jwt.claims', '{"sub": "bob"}', true);
SELECT count(*) FROM app.tasks WHERE board_id = '00000000-0000-4000-8000-0000000000b1';
COMMIT;
