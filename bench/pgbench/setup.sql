-- Tables for the write-path benchmark: the same single-row update on a plain table, on a
-- synced table (trigger path and rowsync.apply), and on a table that NOTIFYs every time.
CREATE EXTENSION IF NOT EXISTS rowsync;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.plain (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.synced (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, version bigint NOT NULL DEFAULT 1);
CREATE TABLE bench.naive (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.naive_log (cursor bigserial PRIMARY KEY, row_id bigint, at timestamptz DEFAULT now());
-- The naive feed: a log row and a NOTIFY carrying it for every write.
CREATE FUNCTION bench.naive_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c bigint;
BEGIN
    INSERT INTO bench.naive_log (row_id) VALUES (NEW.id) RETURNING cursor INTO c;
    PERFORM pg_notify('naive', c::text);
    RETURN NEW;
END $$;
CREATE TRIGGER capture AFTER UPDATE ON bench.naive FOR EACH ROW EXECUTE FUNCTION bench.naive_capture();
INSERT INTO bench.plain (id) SELECT generate_series(1, 10000);
INSERT INTO bench.synced (id) SELECT generate_series(1, 10000);
INSERT INTO bench.naive (id) SELECT generate_series(1, 10000);
SELECT rowsync.enable('bench.synced');
SELECT rowsync.grant_feed(current_user::regrole);
VACUUM ANALYZE;

-- Fan-out and resume: rows 1–100 form scope grp=1 (shared subscriptions); each of the
-- 10,000 rows is also a record of its own (distinct subscriptions).
CREATE TABLE bench.items (id bigint PRIMARY KEY, grp int NOT NULL, n bigint NOT NULL DEFAULT 0, version bigint NOT NULL DEFAULT 1);
INSERT INTO bench.items (id, grp) SELECT i, CASE WHEN i <= 100 THEN 1 ELSE 2 END FROM generate_series(1, 10000) AS i;
SELECT rowsync.enable('bench.items', '{grp}');
