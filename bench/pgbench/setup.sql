-- Tables for the write-path benchmark: the same single-row update on a plain table, on a
-- synced table (trigger path and rowsync.apply), and on a table that NOTIFYs every time.
CREATE EXTENSION IF NOT EXISTS rowsync;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.plain (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.synced (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, version bigint NOT NULL DEFAULT 1);
CREATE TABLE bench.naive (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.naive_log (cursor bigserial PRIMARY KEY, row_id bigint, at timestamptz DEFAULT now());
-- The same guarantees by hand (bench/pgbench/by_hand.sql): a version column and an outbox.
CREATE TABLE bench.hand (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, version bigint NOT NULL DEFAULT 1);
CREATE TABLE bench.hand_outbox (cursor bigserial PRIMARY KEY, row_id bigint, at timestamptz DEFAULT now());
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
INSERT INTO bench.hand (id) SELECT generate_series(1, 10000);
SELECT rowsync.enable('bench.synced');
SELECT rowsync.grant_feed(current_user::regrole);
VACUUM ANALYZE;

-- Fan-out and resume: rows 1–100 form scope grp=1 (shared subscriptions), rows 101–200
-- scope grp=3, where every even row is private to a user nobody signs in as (policies
-- hide half the rows); each of the 10,000 rows is also a record of its own (distinct
-- subscriptions). Readers are bench_user with a `sub` of u0…u9999, members of every
-- group, under a policy of the demo's shape: an InitPlan on the user, a hashed subplan
-- on memberships.
CREATE TABLE bench.items (id bigint PRIMARY KEY, grp int NOT NULL, n bigint NOT NULL DEFAULT 0,
                          private_to text, version bigint NOT NULL DEFAULT 1);
INSERT INTO bench.items (id, grp, private_to)
SELECT i, CASE WHEN i <= 100 THEN 1 WHEN i <= 200 THEN 3 ELSE 2 END,
       CASE WHEN i > 100 AND i <= 200 AND i % 2 = 0 THEN 'nobody' END
  FROM generate_series(1, 10000) AS i;
CREATE TABLE bench.members (user_id text NOT NULL, grp int NOT NULL, PRIMARY KEY (user_id, grp));
INSERT INTO bench.members SELECT 'u' || u, g FROM generate_series(0, 9999) u, unnest('{1,2,3}'::int[]) g;
DO $$ BEGIN
    CREATE ROLE bench_user NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
GRANT USAGE ON SCHEMA bench TO bench_user;
GRANT SELECT ON bench.items, bench.members TO bench_user;
ALTER TABLE bench.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY items_read ON bench.items FOR SELECT TO bench_user
    USING (grp IN (SELECT m.grp FROM bench.members m WHERE m.user_id = (SELECT rowsync.user_id()))
           AND (private_to IS NULL OR private_to = (SELECT rowsync.user_id())));
SELECT rowsync.enable('bench.items', '{grp}');
-- The shared scope again, declared `visibility => 'scope'` (its policy is the scope's):
-- its rows go to the scope's followers as two of them see them.
CREATE TABLE bench.scoped (LIKE bench.items INCLUDING ALL);
INSERT INTO bench.scoped SELECT * FROM bench.items WHERE grp = 1;
GRANT SELECT ON bench.scoped TO bench_user;
ALTER TABLE bench.scoped ENABLE ROW LEVEL SECURITY;
CREATE POLICY scoped_read ON bench.scoped FOR SELECT TO bench_user
    USING (grp IN (SELECT m.grp FROM bench.members m WHERE m.user_id = (SELECT rowsync.user_id())));
SELECT rowsync.enable('bench.scoped', '{grp}', visibility => 'scope');
