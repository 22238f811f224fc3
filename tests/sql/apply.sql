-- rowsync.apply and rowsync.get as a user of the example app (bob, editor of "Launch").
\pset format aligned
SET ROLE app_user;
SET request.jwt.claims = '{"sub": "bob"}';

-- One transaction: set a column, a path into jsonb, and a list insert. The result holds
-- the new rows, the inverse ops (last op first) and the change cursor (timestamps and
-- cursors vary from run to run, so they are left out here).
SELECT jsonb_pretty((r - 'cursor') #- '{rows,0,row,updated_at}') AS result, (r -> 'cursor') IS NOT NULL AS has_cursor
FROM rowsync.apply('{
  "id": "aaaaaaaa-0000-4000-8000-000000000001",
  "ops": [
    {"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000001", "key": "status", "value": "doing", "version": 1},
    {"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000001", "key": "meta.color", "value": "red"},
    {"type": "listInsert", "table": "tasks", "id": "00000000-0000-4000-8000-000000000001", "key": "tags", "value": "launch", "position": "prepend"}
  ]}') AS r;

-- A retry with the same id returns the same result and applies nothing.
SELECT r -> 'rows' -> 0 -> 'version' AS version
FROM rowsync.apply('{
  "id": "aaaaaaaa-0000-4000-8000-000000000001",
  "ops": [{"type": "set", "table": "tasks", "id": "00000000-0000-4000-8000-000000000001", "key": "status", "value": "doing", "version": 1}]}') AS r;

-- Create and delete; undo of the delete re-creates the whole row.
SELECT r -> 'rows' -> 0 -> 'row' ->> 'title' AS title, r -> 'inverse' AS inverse
FROM rowsync.apply('{"ops": [{"type": "create", "table": "tasks", "id": "00000000-0000-4000-8000-0000000000e1",
  "value": {"board_id": "00000000-0000-4000-8000-0000000000b1", "title": "Order stickers"}}]}') AS r;
SELECT jsonb_pretty(r -> 'inverse' #- '{0,value,updated_at}') AS inverse
FROM rowsync.apply('{"ops": [{"type": "delete", "table": "tasks", "id": "00000000-0000-4000-8000-000000000003"}]}') AS r;

-- get: visible rows, and null for rows that are hidden or missing alike.
SELECT p ->> 'id' AS id, p -> 'row' ->> 'title' AS title
FROM jsonb_array_elements(rowsync.get('[
  "tasks:00000000-0000-4000-8000-000000000001",
  "tasks:00000000-0000-4000-8000-000000000004",
  {"table": "tasks", "id": "00000000-0000-4000-8000-0000000000ff"}]') -> 'rows') AS p;
