//! The change feed: positions by tick, reads that no open transaction can stall,
//! wake-ups at commit, the capture trigger that no role can forge, retention.

use rowsync_tests::{demo, scalar, sqlstate, touch, Cluster, OpenTransactions};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use tokio_postgres::{Client, Notification};

/// Ticks, then reads the batch since tick `since`: the bridge's poll. Returns the new
/// tick (or `since` when nothing committed) and the changed rows' ids, in feed order.
async fn advance(reader: &Client, since: i64) -> (i64, Vec<String>) {
    let rows = reader
        .query(
            "SELECT upto, coalesce(row_id, kind) FROM rowsync.advance($1, 100000)",
            &[&since],
        )
        .await
        .expect("advance");
    let upto = rows.first().map_or(since, |r| r.get(0));
    (upto, rows.iter().map(|r| r.get(1)).collect())
}

/// Ticks, and returns the newest tick: where a reader that has seen everything stands.
async fn head(reader: &Client) -> i64 {
    scalar(reader, "SELECT rowsync.tick()", &[]).await
}

/// The newest cursor in the log.
async fn newest(reader: &Client) -> i64 {
    scalar(
        reader,
        "SELECT coalesce(max(cursor), 0) FROM rowsync.changes",
        &[],
    )
    .await
}

/// Counts the wake-ups on channel `rowsync` until the writer's `NOTIFY marker`, which
/// commits after everything the test did before it: notifications arrive in commit order.
async fn wakeups_before_marker(
    notes: &mut UnboundedReceiver<Notification>,
    writer: &Client,
) -> usize {
    writer.batch_execute("NOTIFY marker").await.unwrap();
    let mut count = 0;
    loop {
        let note = timeout(Duration::from_secs(10), notes.recv())
            .await
            .expect("the marker")
            .unwrap();
        if note.channel() == "marker" {
            return count;
        }
        assert_eq!(note.payload(), "", "wake-ups carry nothing");
        count += 1;
    }
}

/// A later transaction that commits first is delivered at once, the earlier one when it
/// commits; each exactly once.
#[tokio::test]
async fn out_of_order_commits_are_never_skipped_nor_held_back() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_order").await;
    let reader = cluster.connect("postgres", &db).await;
    let start = head(&reader).await;
    let first = cluster.connect("postgres", &db).await;
    let second = cluster.connect("postgres", &db).await;

    // `first` takes the lower xid and cursor, `second` the higher; `second` commits first.
    first
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    second
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_SIGNUP)))
        .await
        .unwrap();
    second.batch_execute("COMMIT").await.unwrap();
    let (tick, early) = advance(&reader, start).await;
    assert_eq!(early, [demo::TASK_SIGNUP], "the committed change, at once");

    first.batch_execute("COMMIT").await.unwrap();
    let (_, late) = advance(&reader, tick).await;
    assert_eq!(late, [demo::TASK_ANNOUNCE]);
}

/// Nothing that stays open anywhere holds a committed change back: a write transaction
/// on another table, one on a synced table, a session holding an xid in another
/// database, a prepared transaction. Each long one lands in the batch after it ends.
#[tokio::test]
async fn no_open_transaction_stalls_the_feed() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_stall").await;
    let other_db = cluster.database("feed_stall_other").await;
    let reader = cluster.connect("postgres", &db).await;
    let writer = cluster.connect("postgres", &db).await;
    let start = head(&reader).await;

    let held = OpenTransactions::begin(cluster, &db, &other_db).await;

    let mut at = start;
    for round in 0..20 {
        writer
            .batch_execute(&touch(demo::TASK_ANNOUNCE))
            .await
            .unwrap();
        let (upto, ids) = advance(&reader, at).await;
        assert_eq!(ids, [demo::TASK_ANNOUNCE], "round {round}: read at once");
        at = upto;
    }
    held.end(true).await;
    let (at, ids) = advance(&reader, at).await;
    let ids: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(
        ids,
        BTreeSet::from([demo::TASK_MILK.to_string(), demo::TASK_SECRET.to_string()]),
        "the long transactions, once each, when they commit"
    );
    assert_eq!(advance(&reader, at).await.1, Vec::<String>::new());
}

/// A transaction's changes become readable together, next to each other; a change made in
/// a rolled-back savepoint never appears, one in a released savepoint appears with its
/// transaction.
#[tokio::test]
async fn a_transactions_changes_travel_together() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_together").await;
    let reader = cluster.connect("postgres", &db).await;
    let writer = cluster.connect("postgres", &db).await;
    let other = cluster.connect("postgres", &db).await;
    let start = head(&reader).await;
    writer
        .batch_execute(&format!(
            "BEGIN; {}; SAVEPOINT a; {}; ROLLBACK TO SAVEPOINT a; SAVEPOINT b; {}; RELEASE SAVEPOINT b",
            touch(demo::TASK_ANNOUNCE),
            touch(demo::TASK_SECRET),
            touch(demo::TASK_SIGNUP)
        ))
        .await
        .unwrap();
    other.batch_execute(&touch(demo::TASK_MILK)).await.unwrap();
    let (tick, ids) = advance(&reader, start).await;
    assert_eq!(ids, [demo::TASK_MILK], "nothing of the open transaction");
    writer.batch_execute("COMMIT").await.unwrap();
    let (_, ids) = advance(&reader, tick).await;
    assert_eq!(ids, [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP]);
    let xids: i64 = scalar(
        &reader,
        "SELECT count(DISTINCT xid) FROM rowsync.changes WHERE row_id = ANY($1) AND cursor > 17",
        &[&vec![demo::TASK_ANNOUNCE, demo::TASK_SIGNUP]],
    )
    .await;
    assert_eq!(xids, 1, "logged under the top-level transaction");
}

/// Writers committing, aborting, using savepoints and two-phase commit at random, while
/// two readers tick concurrently: every committed change reaches each reader exactly
/// once, and every tick sees what the one before it saw.
#[tokio::test]
async fn every_committed_change_is_delivered_exactly_once() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_exactly_once").await;
    let setup = cluster.connect("postgres", &db).await;
    setup
        .batch_execute(
            "CREATE TABLE app.counter (id text PRIMARY KEY, n int);
             SELECT rowsync.enable('app.counter');",
        )
        .await
        .unwrap();
    let start = head(&setup).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let client = cluster.connect("postgres", &db).await;
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            let mut seed = w
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for i in 0..40 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let id = format!("w{w}-{i}");
                let insert = format!("INSERT INTO app.counter VALUES ('{id}', {i})");
                let pause = Duration::from_millis((seed >> 40) % 5);
                match (seed >> 33) % 5 {
                    0 => {
                        let sql = format!("BEGIN; {insert}; ROLLBACK");
                        client.batch_execute(&sql).await.unwrap();
                    }
                    1 => {
                        let sql = format!(
                            "BEGIN; SAVEPOINT s; {insert}; ROLLBACK TO SAVEPOINT s; COMMIT"
                        );
                        client.batch_execute(&sql).await.unwrap();
                    }
                    2 => {
                        let gid = format!("{db}-{id}");
                        let sql = format!("BEGIN; {insert}; PREPARE TRANSACTION '{gid}'");
                        client.batch_execute(&sql).await.unwrap();
                        tokio::time::sleep(pause).await;
                        let sql = format!("COMMIT PREPARED '{gid}'");
                        client.batch_execute(&sql).await.unwrap();
                        committed.push(id);
                    }
                    _ => {
                        client.batch_execute("BEGIN").await.unwrap();
                        client.batch_execute(&insert).await.unwrap();
                        tokio::time::sleep(pause).await;
                        client.batch_execute("COMMIT").await.unwrap();
                        committed.push(id);
                    }
                }
            }
            committed
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..2 {
        let client = cluster.connect("postgres", &db).await;
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let (mut at, mut seen) = (start, Vec::new());
            let mut last_round = false;
            loop {
                let (upto, ids) = advance(&client, at).await;
                assert!(upto >= at);
                at = upto;
                seen.extend(ids.into_iter().filter(|id| id.starts_with('w')));
                if last_round {
                    return seen;
                }
                last_round = done.load(std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    let mut committed = Vec::new();
    for writer in writers {
        committed.extend(writer.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    committed.sort();
    for reader in readers {
        let mut seen = reader.await.unwrap();
        seen.sort();
        assert_eq!(seen, committed, "each committed change once");
    }
    let monotone: bool = scalar(
        &setup,
        "SELECT bool_and(pg_snapshot_xmax(prev) <= pg_snapshot_xmax(snap)
                         AND pg_snapshot_xmin(prev) <= pg_snapshot_xmin(snap))
           FROM (SELECT snap, lag(snap) OVER (ORDER BY id) AS prev FROM rowsync.ticks) t
          WHERE prev IS NOT NULL",
        &[],
    )
    .await;
    assert!(monotone, "every tick sees what the one before saw");
}

/// A large transaction is read in pages; a reader resumes after the last key it read.
#[tokio::test]
async fn a_large_batch_pages_and_resumes_mid_batch() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_paging").await;
    let reader = cluster.connect("postgres", &db).await;
    let start = head(&reader).await;
    reader
        .batch_execute(
            "CREATE TABLE app.many (id int PRIMARY KEY);
             SELECT rowsync.enable('app.many');
             INSERT INTO app.many SELECT generate_series(1, 2500);",
        )
        .await
        .unwrap();
    let upto: i64 = scalar(&reader, "SELECT rowsync.tick()", &[]).await;
    let page = "SELECT xid::text, cursor, row_id \
                FROM rowsync.read_changes($1, $2, $3::text::xid8, $4, 1000)";
    let (mut xid, mut cursor, mut ids) = ("0".to_string(), 0i64, Vec::<String>::new());
    let mut pages = 0;
    loop {
        let rows = reader
            .query(page, &[&start, &upto, &xid, &cursor])
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        pages += 1;
        xid = last.get(0);
        cursor = last.get(1);
        ids.extend(rows.iter().map(|r| r.get::<_, String>(2)));
    }
    let expected: Vec<String> = (1..=2500).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(pages, 3);
}

/// A poll reads what it returns and little else, however long the log: an idle poll is a
/// few index probes, and a poll with one new change fetches about that change. Counted by
/// Postgres (tuples fetched and sequential scans of the log in this transaction), with
/// 20,000 changes before them. A plan that scans the log from its start (a generic plan,
/// or a range with two lower bounds) fetches every one of them.
#[tokio::test]
async fn a_poll_reads_only_what_is_new() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_probes").await;
    let reader = cluster.connect("postgres", &db).await;
    reader
        .batch_execute(
            "CREATE TABLE app.log_filler (id int PRIMARY KEY);
             SELECT rowsync.enable('app.log_filler');
             INSERT INTO app.log_filler SELECT generate_series(1, 20000);",
        )
        .await
        .unwrap();
    let since = head(&reader).await;
    let reads = "SELECT seq_scan, coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_all_tables \
                 WHERE relid = 'rowsync.changes'::regclass";
    let poll = |since: i64| {
        let reader = &reader;
        async move {
            reader.batch_execute("BEGIN").await.unwrap();
            let before = reader.query_one(reads, &[]).await.unwrap();
            let (upto, ids) = advance(reader, since).await;
            let after = reader.query_one(reads, &[]).await.unwrap();
            reader.batch_execute("COMMIT").await.unwrap();
            let scans = after.get::<_, i64>(0) - before.get::<_, i64>(0);
            let fetched = after.get::<_, i64>(1) - before.get::<_, i64>(1);
            (upto, ids, scans, fetched)
        }
    };
    let (upto, ids, scans, fetched) = poll(since).await;
    assert_eq!((upto, ids.len(), scans), (since, 0, 0), "an idle poll");
    assert!(fetched <= 2, "an idle poll fetched {fetched} changes");
    reader
        .batch_execute("UPDATE app.log_filler SET id = 0 WHERE id = 7")
        .await
        .unwrap();
    let (upto, ids, scans, fetched) = poll(since).await;
    assert!(upto > since);
    assert_eq!((ids, scans), (vec!["7".to_string(), "0".to_string()], 0));
    assert!(fetched <= 6, "a poll of two changes fetched {fetched}");
}

/// The capture writes the log without the executor, so an index only the executor can
/// maintain (here, on an expression), or a column whose default only an INSERT would
/// fill, is refused at the next write, which fails whole, rather than left without its
/// entry or value; without them, writes log again.
#[tokio::test]
async fn an_index_the_capture_cannot_maintain_is_refused() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_log_index").await;
    let admin = cluster.connect("postgres", &db).await;
    let before = newest(&admin).await;
    admin
        .batch_execute("CREATE INDEX changes_kind ON rowsync.changes (lower(kind))")
        .await
        .unwrap();
    let error = admin
        .batch_execute("UPDATE app.tasks SET title = 'x'")
        .await
        .expect_err("a write while the log has an expression index");
    assert!(
        error.to_string().contains("cannot maintain it")
            || format!("{error:?}").contains("cannot maintain it"),
        "{error:?}"
    );
    assert_eq!(newest(&admin).await, before);
    admin
        .batch_execute(
            "DROP INDEX rowsync.changes_kind;
             ALTER TABLE rowsync.changes ADD COLUMN note text NOT NULL DEFAULT 'x'",
        )
        .await
        .unwrap();
    let error = admin
        .batch_execute("UPDATE app.tasks SET title = 'x'")
        .await
        .expect_err("a write while the log has a column with a default");
    assert!(
        format!("{error:?}").contains("rowsync does not know"),
        "{error:?}"
    );
    assert_eq!(newest(&admin).await, before);
    admin
        .batch_execute(
            "ALTER TABLE rowsync.changes DROP COLUMN note; UPDATE app.tasks SET title = 'y'",
        )
        .await
        .unwrap();
    assert!(newest(&admin).await > before);
}

/// One payload-free notification per transaction, at commit only, none after a rollback.
#[tokio::test]
async fn notify_at_commit_once_and_never_after_rollback() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_notify").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .batch_execute("LISTEN marker; SELECT rowsync.listener_sleep('test')")
        .await
        .unwrap();
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&format!(
            "BEGIN; {}; {}; {}",
            touch(demo::TASK_ANNOUNCE),
            touch(demo::TASK_SIGNUP),
            touch(demo::TASK_MILK)
        ))
        .await
        .unwrap();
    assert!(notes.try_recv().is_err(), "nothing before the commit");
    writer.batch_execute("COMMIT").await.unwrap();
    writer
        .batch_execute(&format!("BEGIN; {}; ROLLBACK", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    assert_eq!(wakeups_before_marker(&mut notes, &writer).await, 1);
}

/// While every listener is awake, writers skip NOTIFY; a writer that began while all were
/// awake and commits after one fell asleep does notify: it decides at its commit.
#[tokio::test]
async fn writers_decide_to_notify_at_commit() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_awake").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .batch_execute("LISTEN marker; SELECT rowsync.listener_awake('a')")
        .await
        .unwrap();
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    assert_eq!(wakeups_before_marker(&mut notes, &writer).await, 0);

    writer
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_SIGNUP)))
        .await
        .unwrap();
    listener
        .execute("SELECT rowsync.listener_sleep('b')", &[])
        .await
        .unwrap();
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(wakeups_before_marker(&mut notes, &writer).await, 1);
}

/// A transaction that has NOTIFYed cannot be prepared; writers never NOTIFY before they
/// commit, so PREPARE works while a listener sleeps.
#[tokio::test]
async fn prepare_transaction_works_while_a_listener_sleeps() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_prepare").await;
    let (listener, _notes) = cluster.listen(&db).await;
    listener
        .execute("SELECT rowsync.listener_sleep('s')", &[])
        .await
        .unwrap();
    let start = head(&listener).await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&format!(
            "BEGIN; {}; PREPARE TRANSACTION 'p_{db}'",
            touch(demo::TASK_SIGNUP)
        ))
        .await
        .expect("PREPARE with a sleeping listener");
    writer
        .batch_execute(&format!("COMMIT PREPARED 'p_{db}'"))
        .await
        .unwrap();
    assert_eq!(advance(&listener, start).await.1, [demo::TASK_SIGNUP]);
}

/// The lost wake-up: a writer that saw the listener awake commits after the listener's
/// last poll. Falling asleep waits for the transactions running at that moment, so the
/// read after it finds the change.
#[tokio::test]
async fn falling_asleep_never_loses_a_change() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_sleep").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .execute("SELECT rowsync.listener_awake('l')", &[])
        .await
        .unwrap();
    let start = head(&listener).await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    assert!(advance(&listener, start).await.1.is_empty());
    listener
        .execute("SELECT rowsync.listener_sleep('l')", &[])
        .await
        .unwrap();
    // Other tests' transactions are pending too: this test follows its writer's.
    let mine: String = scalar(&writer, "SELECT pg_current_xact_id()::text", &[]).await;
    let pending: String = scalar(&listener, "SELECT rowsync.listener_pending()::text", &[]).await;
    assert!(
        pending
            .trim_matches(['{', '}'])
            .split(',')
            .any(|x| x == mine),
        "{mine} in {pending}"
    );
    let settled = "SELECT rowsync.listener_settled(ARRAY[$1::text::xid8])";
    let before: bool = scalar(&listener, settled, &[&mine]).await;
    assert!(!before, "settled while a writer is running");
    writer.batch_execute("COMMIT").await.unwrap();
    let after: bool = scalar(&listener, settled, &[&mine]).await;
    assert!(after);
    assert_eq!(advance(&listener, start).await.1, [demo::TASK_ANNOUNCE]);
    // It committed after the listener fell asleep, so it notified as well.
    assert!(timeout(Duration::from_secs(10), notes.recv()).await.is_ok());
}

#[tokio::test]
async fn a_position_out_of_retention_is_told_to_resync() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_retention").await;
    let admin = cluster.connect("postgres", &db).await;
    let old = head(&admin).await;
    admin
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    let (newest, _) = advance(&admin, old).await;
    admin
        .batch_execute("UPDATE rowsync.settings SET change_retention = '0 seconds'")
        .await
        .unwrap();
    let pruned: serde_json::Value = scalar(&admin, "SELECT rowsync.prune()", &[]).await;
    assert_eq!(pruned["changes"], 18, "the demo's and the touch: {pruned}");
    let error = admin
        .query(
            "SELECT * FROM rowsync.read_changes($1, $2)",
            &[&old, &newest],
        )
        .await
        .expect_err("a pruned position");
    assert_eq!(sqlstate(&error), "RS410");
    assert_eq!(head(&admin).await, newest, "the newest tick stays");
    assert_eq!(advance(&admin, newest).await.1, Vec::<String>::new());
}

/// A tick taken in an older snapshot could miss what the tick before it saw: tick() runs
/// only in READ COMMITTED.
#[tokio::test]
async fn ticks_refuse_an_older_snapshot() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_tick_isolation").await;
    let admin = cluster.connect("postgres", &db).await;
    let error = admin
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT rowsync.tick()")
        .await
        .expect_err("a tick in REPEATABLE READ");
    assert_eq!(sqlstate(&error), "RS006");
}

/// Old ticks are thinned; a position naming a thinned tick reads from the kept one
/// before it: changes may come twice, never go missing.
#[tokio::test]
async fn thinned_ticks_replay_and_never_skip() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_thin").await;
    let admin = cluster.connect("postgres", &db).await;
    let mut ticks = vec![head(&admin).await];
    for task in [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP, demo::TASK_MILK] {
        admin.batch_execute(&touch(task)).await.unwrap();
        let (upto, _) = advance(&admin, *ticks.last().unwrap()).await;
        ticks.push(upto);
    }
    // Two seconds, ten minutes ago: ticks 0 and 1 in the first, 2 and 3 in the second.
    admin
        .execute(
            "UPDATE rowsync.ticks SET at = date_trunc('second', now()) - interval '10 minutes'
                 - CASE WHEN id <= $1 THEN interval '5 seconds' ELSE interval '0' END",
            &[&ticks[1]],
        )
        .await
        .unwrap();
    admin
        .batch_execute(
            "UPDATE rowsync.settings SET tick_keep_all = '1 minute'; SELECT rowsync.prune();",
        )
        .await
        .unwrap();
    let kept: Vec<i64> = admin
        .query("SELECT id FROM rowsync.ticks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [ticks[1], ticks[3]], "the newest tick of each second");
    // A reader at tick 2 (thinned) reads from tick 1: SIGNUP again, then MILK.
    let rows = admin
        .query(
            "SELECT row_id FROM rowsync.read_changes($1, $2)",
            &[&ticks[2], &ticks[3]],
        )
        .await
        .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [demo::TASK_SIGNUP, demo::TASK_MILK]);
}

#[tokio::test]
async fn only_feed_roles_read_the_feed() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_grants").await;
    let bridge = rowsync_tests::authenticator(&db).await;
    assert!(bridge
        .query("SELECT * FROM rowsync.advance(1)", &[])
        .await
        .is_ok());
    let user = cluster.connect("rowsync_authenticator", &db).await;
    user.batch_execute("SET ROLE app_user").await.unwrap();
    for sql in [
        "SELECT * FROM rowsync.advance(1)",
        "SELECT * FROM rowsync.read_changes(1, 1)",
        "SELECT rowsync.tick()",
        "SELECT * FROM rowsync.changes",
        "SELECT * FROM rowsync.ticks",
        "SELECT rowsync.listener_awake('x')",
        "SELECT rowsync.prune()",
        "SELECT rowsync.reset_feed()",
        "SELECT * FROM rowsync.listeners",
        "SELECT setval('rowsync.sleepers', 5)",
        "SELECT * FROM rowsync.bus",
        "SELECT rowsync.bus_publish('b', '[]')",
        "SELECT * FROM rowsync.bus_read(NULL)",
    ] {
        let error = user.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&error), "42501", "{sql}");
    }
}

/// The capture trigger logs the key as text and the scopes as `to_jsonb` gives them,
/// whatever their types; a changed key is a delete and an insert; versions count up.
#[tokio::test]
async fn capture_logs_keys_scopes_and_versions_by_type() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_capture").await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(
            "SET TimeZone = 'UTC';
             CREATE TABLE app.typed (id int PRIMARY KEY, grp int, label text, flag boolean,
                                     due timestamptz, amount numeric, code char(8), note text);
             SELECT rowsync.enable('app.typed', '{grp,label,flag,due,amount,code}');",
        )
        .await
        .unwrap();
    let start = newest(&writer).await;
    writer
        .batch_execute(
            "INSERT INTO app.typed VALUES (1, 7, 'it''s', true, '2030-01-01 10:00+00', 1.50, 'acme0001', 'x');
             UPDATE app.typed SET note = 'y', label = NULL WHERE id = 1;
             UPDATE app.typed SET id = 2 WHERE id = 1;
             DELETE FROM app.typed WHERE id = 2;",
        )
        .await
        .unwrap();
    let rows = writer
        .query(
            "SELECT row_id, version, kind, coalesce(old_scopes::text, '-'), coalesce(new_scopes::text, '-')
               FROM rowsync.changes WHERE cursor > $1 AND tbl = 'typed' ORDER BY cursor",
            &[&start],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let scopes = |label: &str| {
        format!(
            r#"{{"due": "2030-01-01T10:00:00+00:00", "grp": 7, "code": "acme0001", "flag": true, "label": {label}, "amount": 1.50}}"#
        )
    };
    let (first, later) = (scopes(r#""it's""#), scopes("null"));
    let row = |id: &str, version: i64, kind: &str, old: &str, new: &str| {
        (
            id.to_string(),
            version,
            kind.to_string(),
            old.to_string(),
            new.to_string(),
        )
    };
    assert_eq!(
        got,
        vec![
            row("1", 1, "insert", "-", &first),
            row("1", 2, "update", &first, &later),
            row("1", 3, "delete", &later, "-"),
            row("2", 3, "insert", "-", &later),
            row("2", 4, "delete", &later, "-"),
        ]
    );
    let left: i64 = scalar(&writer, "SELECT count(*) FROM app.typed", &[]).await;
    assert_eq!(left, 0);
}

/// Forged capture: a role that can create tables attaches rowsync._capture to its own
/// table, naming a synced table in the arguments, for rows and for TRUNCATE; an app role
/// does the same, and attaches a second copy to a synced table. Each is refused with
/// 39P01 and logs nothing. A spoofed transaction id does not reach the log, and a
/// registry entry cannot take another table's name or touch another owner's entry.
#[tokio::test]
async fn capture_cannot_be_forged() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_forge").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT CREATE ON DATABASE {db} TO mallory;
             GRANT TRIGGER ON app.tasks TO app_user;
             GRANT CREATE ON SCHEMA app TO app_user;"
        ))
        .await
        .unwrap();
    let before: i64 = scalar(&admin, "SELECT count(*) FROM rowsync.changes", &[]).await;
    let mallory = cluster.connect("mallory", &db).await;
    mallory
        .batch_execute(
            "CREATE SCHEMA mine;
             CREATE TABLE mine.tasks (id uuid PRIMARY KEY, board_id uuid, version bigint);
             CREATE TRIGGER zzz_rowsync_capture BEFORE INSERT OR UPDATE OR DELETE ON mine.tasks
                 FOR EACH ROW EXECUTE FUNCTION rowsync._capture('tasks', 'id', 'board_id');
             CREATE TRIGGER zzz_rowsync_truncate BEFORE TRUNCATE ON mine.tasks
                 FOR EACH STATEMENT EXECUTE FUNCTION rowsync._capture('tasks');
             CREATE TEMP TABLE tmp (id uuid PRIMARY KEY, version bigint);
             CREATE TRIGGER zzz_rowsync_capture BEFORE INSERT ON tmp
                 FOR EACH ROW EXECUTE FUNCTION rowsync._capture('tasks', 'id');",
        )
        .await
        .unwrap();
    let app = cluster.connect("rowsync_authenticator", &db).await;
    app.batch_execute(r#"SET ROLE app_user; SET request.jwt.claims = '{"sub": "alice"}'"#)
        .await
        .unwrap();
    app.batch_execute(
        "CREATE TABLE app.mine (id uuid PRIMARY KEY, version bigint);
         CREATE TRIGGER zzz_rowsync_capture BEFORE INSERT ON app.mine
             FOR EACH ROW EXECUTE FUNCTION rowsync._capture('tasks', 'id');
         CREATE TRIGGER zzz_rowsync_truncate BEFORE TRUNCATE ON app.mine
             FOR EACH STATEMENT EXECUTE FUNCTION rowsync._capture('tasks');
         CREATE TEMP TABLE tmp (id uuid PRIMARY KEY, board_id uuid, version bigint);
         CREATE TRIGGER zzz_rowsync_capture BEFORE INSERT OR UPDATE ON tmp
             FOR EACH ROW EXECUTE FUNCTION rowsync._capture('tasks', 'id', 'board_id');
         CREATE TRIGGER zz_copy BEFORE UPDATE ON app.tasks
             FOR EACH ROW EXECUTE FUNCTION rowsync._capture();",
    )
    .await
    .unwrap();
    let task = format!("'{}'", demo::TASK_ANNOUNCE);
    for (client, sql) in [
        (
            &mallory,
            format!("INSERT INTO mine.tasks VALUES ({task}, NULL, 1)"),
        ),
        (&mallory, "TRUNCATE mine.tasks".to_string()),
        (&mallory, format!("INSERT INTO tmp VALUES ({task}, 1)")),
        (&app, format!("INSERT INTO app.mine VALUES ({task}, 1)")),
        (&app, "TRUNCATE app.mine".to_string()),
        (&app, format!("INSERT INTO tmp VALUES ({task}, NULL, 1)")),
        (
            &app,
            format!("UPDATE app.tasks SET title = 'x' WHERE id = {task}"),
        ),
    ] {
        let error = client.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&error), "39P01", "{sql}: {error:?}");
    }
    admin
        .batch_execute("DROP TRIGGER zz_copy ON app.tasks")
        .await
        .unwrap();

    // Registering its own table is allowed: its changes are logged under its own name
    // and relation, and it cannot take the name of another table.
    mallory
        .batch_execute("SELECT rowsync.enable('mine.tasks', '{board_id}')")
        .await
        .unwrap();
    let renamed = mallory
        .batch_execute(
            "UPDATE rowsync.synced SET name = 'tasks' WHERE rel = 'mine.tasks'::regclass",
        )
        .await
        .expect_err("a taken name");
    assert_eq!(sqlstate(&renamed), "23505");
    mallory
        .batch_execute(
            "UPDATE rowsync.synced SET scopes = '{}' WHERE name = 'tasks';
             SELECT rowsync._unregister(rel) FROM rowsync.synced WHERE name = 'tasks';",
        )
        .await
        .unwrap();
    let deleted = mallory
        .batch_execute("DELETE FROM rowsync.synced WHERE name = 'tasks'")
        .await
        .expect_err("no role deletes registry rows");
    assert_eq!(sqlstate(&deleted), "42501");
    let untouched: String = scalar(
        &admin,
        "SELECT scopes::text FROM rowsync.synced WHERE name = 'tasks'",
        &[],
    )
    .await;
    assert_eq!(
        untouched, "{board_id}",
        "another owner's registry row is out of reach"
    );
    mallory
        .batch_execute(&format!(
            "SELECT set_config('rowsync.tx_id', '11111111-1111-4111-8111-111111111111', false);
             INSERT INTO mine.tasks VALUES ({task}, NULL, 1);"
        ))
        .await
        .unwrap();
    let logged = admin
        .query(
            "SELECT rel::regclass::text, tbl, tx_id::text FROM rowsync.changes
              ORDER BY xid, cursor OFFSET $1",
            &[&before],
        )
        .await
        .unwrap();
    let logged: Vec<(String, String, Option<String>)> = logged
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        logged,
        [("mine.tasks".to_string(), "mine.tasks".to_string(), None)],
        "only mallory's own table, under its own name, with no transaction id"
    );
}

/// A registry change made without DDL (an owner's UPDATE of its scopes) reaches a
/// backend that already cached the table.
#[tokio::test]
async fn a_registry_change_reaches_warm_backends() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_registry").await;
    let writer = cluster.connect("postgres", &db).await;
    let admin = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    admin
        .batch_execute("UPDATE rowsync.synced SET scopes = '{}' WHERE name = 'tasks'")
        .await
        .unwrap();
    writer
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    let scopes: Option<String> = scalar(
        &admin,
        "SELECT new_scopes::text FROM rowsync.changes WHERE tbl = 'tasks'
          ORDER BY xid DESC, cursor DESC LIMIT 1",
        &[],
    )
    .await;
    assert_eq!(scopes, None);
}

/// The capture refuses a statement-level trigger, and a scope column dropped after
/// enabling reads as null instead of failing writes.
#[tokio::test]
async fn capture_refuses_misuse_and_survives_a_dropped_scope() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_capture_misuse").await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(
            "CREATE TABLE app.misused (id int PRIMARY KEY, version bigint);
             SELECT rowsync.enable('app.misused');
             CREATE TRIGGER zzz_rowsync_capture_2 AFTER INSERT ON app.misused FOR EACH STATEMENT
                 EXECUTE FUNCTION rowsync._capture();",
        )
        .await
        .unwrap();
    let error = writer
        .batch_execute("INSERT INTO app.misused VALUES (1, 1)")
        .await
        .expect_err("a statement-level capture must fail");
    assert_eq!(sqlstate(&error), "39P01", "{error:?}");

    writer
        .batch_execute(
            "CREATE TABLE app.grouped (id int PRIMARY KEY, grp int);
             SELECT rowsync.enable('app.grouped', '{grp}');
             INSERT INTO app.grouped VALUES (1, 5);
             ALTER TABLE app.grouped DROP COLUMN grp;",
        )
        .await
        .unwrap();
    writer
        .batch_execute("UPDATE app.grouped SET id = id WHERE id = 1")
        .await
        .unwrap();
    let scopes: String = scalar(
        &writer,
        "SELECT new_scopes::text FROM rowsync.changes WHERE tbl = 'grouped'
          ORDER BY xid DESC, cursor DESC LIMIT 1",
        &[],
    )
    .await;
    assert_eq!(scopes, r#"{"grp": null}"#);
}

/// rowsync.apply credits its changes to its transaction id, and nothing else is: not
/// plain SQL after a failed apply in the same transaction.
#[tokio::test]
async fn only_apply_sets_the_transaction_id() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_tx_id").await;
    let mut client = cluster.connect("rowsync_authenticator", &db).await;
    let id = "22222222-2222-4222-8222-222222222222";
    let tx = serde_json::json!({"id": id, "ops": [{"type": "set", "table": "tasks",
        "id": demo::TASK_ANNOUNCE, "key": "title", "value": "applied"}]});
    rowsync_tests::apply_as(&mut client, "alice", tx)
        .await
        .unwrap();
    // The second op fails in Postgres (title is NOT NULL), after the first was written.
    let bad = serde_json::json!({"id": "33333333-3333-4333-8333-333333333333", "ops": [
        {"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "title", "value": "x"},
        {"type": "set", "table": "boards", "id": demo::LAUNCH, "key": "name", "value": null}]});
    let admin = cluster.connect("postgres", &db).await;
    admin.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    assert!(admin
        .query("SELECT rowsync.apply($1)", &[&bad])
        .await
        .is_err());
    admin
        .batch_execute(&format!(
            "ROLLBACK TO SAVEPOINT s; {}; COMMIT",
            touch(demo::TASK_SIGNUP)
        ))
        .await
        .unwrap();
    let rows = admin
        .query(
            "SELECT row_id, tx_id::text FROM rowsync.changes WHERE row_id = ANY($1)
              ORDER BY xid, cursor",
            &[&vec![demo::TASK_ANNOUNCE, demo::TASK_SIGNUP]],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got.last(), Some(&(demo::TASK_SIGNUP.to_string(), None)));
    assert!(
        got.contains(&(demo::TASK_ANNOUNCE.to_string(), Some(id.to_string()))),
        "{got:?}"
    );
}

/// `apply`'s cursor is the transaction's last change, cascades included: a deleted
/// parent's children are logged when the DELETE statement ends.
#[tokio::test]
async fn apply_cursor_includes_cascaded_changes() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_cascade").await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(
            "CREATE TABLE app.parent (id int PRIMARY KEY);
             CREATE TABLE app.child (id int PRIMARY KEY, parent int REFERENCES app.parent ON DELETE CASCADE);
             SELECT rowsync.enable('app.parent');
             SELECT rowsync.enable('app.child');
             INSERT INTO app.parent VALUES (1);
             INSERT INTO app.child VALUES (10, 1), (11, 1);",
        )
        .await
        .unwrap();
    let cursor: i64 = scalar(&writer, r#"SELECT (rowsync.apply('{"ops": [{"type": "delete", "table": "parent", "id": 1}]}') ->> 'cursor')::bigint"#,
            &[],).await;
    let last: i64 = scalar(
        &writer,
        "SELECT max(cursor) FROM rowsync.changes WHERE tbl IN ('parent', 'child')",
        &[],
    )
    .await;
    assert_eq!(cursor, last);
}

/// The capture trigger runs as rowsync's owner, under the writer's search_path: neither an
/// operator of the writer's own nor a cast to json on a scope's type may run with those
/// rights. Each attempt is refused, and the attacker stays unprivileged.
#[tokio::test]
async fn the_capture_runs_no_code_a_role_wrote() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_escalate").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE eve LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT CREATE ON DATABASE {db} TO eve;"
        ))
        .await
        .unwrap();
    let eve = cluster.connect("eve", &db).await;
    // An operator = (regclass, oid) first on the search_path, for the registry lookup.
    eve.batch_execute(
        "CREATE SCHEMA eve;
         CREATE FUNCTION eve.grab(regclass, oid) RETURNS boolean LANGUAGE sql AS
             'ALTER ROLE eve SUPERUSER; SELECT true';
         CREATE OPERATOR eve.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = eve.grab);
         SET search_path = eve, pg_catalog, public;
         CREATE TABLE eve.notes (id int PRIMARY KEY, version bigint);
         CREATE TRIGGER zzz_rowsync_capture BEFORE INSERT ON eve.notes
             FOR EACH ROW EXECUTE FUNCTION rowsync._capture();",
    )
    .await
    .unwrap();
    let refused = eve
        .batch_execute("INSERT INTO eve.notes VALUES (1, 1)")
        .await
        .expect_err("not synced");
    assert_eq!(sqlstate(&refused), "39P01");
    // An enum scope with a cast to json, added after enabling.
    eve.batch_execute(
        "RESET search_path;
         CREATE TYPE eve.mood AS ENUM ('calm');
         CREATE TABLE eve.moods (id int PRIMARY KEY, mood eve.mood);
         SELECT rowsync.enable('eve.moods', '{mood}');
         CREATE FUNCTION eve.to_json(eve.mood) RETURNS json LANGUAGE sql AS
             'ALTER ROLE eve SUPERUSER; SELECT ''1''::json';
         CREATE CAST (eve.mood AS json) WITH FUNCTION eve.to_json(eve.mood);",
    )
    .await
    .unwrap();
    let refused = eve
        .batch_execute("INSERT INTO eve.moods VALUES (1, 'calm')")
        .await
        .expect_err("a scope converted by eve's code");
    assert_eq!(sqlstate(&refused), "0A000");
    let early = eve
        .batch_execute(
            "CREATE TABLE eve.moods2 (id int PRIMARY KEY, mood eve.mood);
             SELECT rowsync.enable('eve.moods2', '{mood}');",
        )
        .await
        .expect_err("enable refuses such a scope");
    assert_eq!(sqlstate(&early), "RS005");
    // An array of such a type converts its elements the same way.
    let arrays = eve
        .batch_execute(
            "CREATE TABLE eve.moods3 (id int PRIMARY KEY, moods eve.mood[]);
             SELECT rowsync.enable('eve.moods3', '{moods}');",
        )
        .await
        .expect_err("enable refuses an array of such a type");
    assert_eq!(sqlstate(&arrays), "RS005");
    let superuser: bool = scalar(
        &admin,
        "SELECT rolsuper FROM pg_roles WHERE rolname = 'eve'",
        &[],
    )
    .await;
    assert!(!superuser, "eve ran code as rowsync's owner");
    // Nor may it lock the registry every write reads, or attach the registry's trigger.
    eve.batch_execute("BEGIN").await.unwrap();
    let lock = eve
        .batch_execute("LOCK TABLE rowsync.synced IN ACCESS EXCLUSIVE MODE")
        .await
        .expect_err("lock the registry");
    assert_eq!(sqlstate(&lock), "42501");
    eve.batch_execute("ROLLBACK").await.unwrap();
    let attach = eve
        .batch_execute(
            "CREATE TABLE eve.relay (rel oid);
             CREATE TRIGGER r AFTER INSERT ON eve.relay FOR EACH ROW
                 EXECUTE FUNCTION rowsync._registry_changed();",
        )
        .await
        .expect_err("attach the registry trigger");
    assert_eq!(sqlstate(&attach), "42501");
}

/// A partitioned table is synced through its root: its partitions' rows are logged under
/// the root's name and relation.
#[tokio::test]
async fn partitioned_tables_log_under_their_root() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_partitions").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(
            "CREATE TABLE app.events (id int PRIMARY KEY, grp int) PARTITION BY RANGE (id);
             CREATE TABLE app.events_low PARTITION OF app.events FOR VALUES FROM (0) TO (100);
             CREATE TABLE app.events_high PARTITION OF app.events FOR VALUES FROM (100) TO (200);
             SELECT rowsync.enable('app.events', '{grp}');
             INSERT INTO app.events VALUES (1, 7), (150, 8);
             UPDATE app.events SET grp = 9 WHERE id = 150;",
        )
        .await
        .unwrap();
    let rows = admin
        .query(
            "SELECT rel::regclass::text, tbl, row_id, kind, version FROM rowsync.changes
              WHERE tbl = 'events' ORDER BY xid, cursor",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let row = |id: &str, kind: &str, version: i64| {
        (
            "app.events".to_string(),
            "events".to_string(),
            id.to_string(),
            kind.to_string(),
            version,
        )
    };
    assert_eq!(
        got,
        [
            row("1", "insert", 1),
            row("150", "insert", 1),
            row("150", "update", 2)
        ]
    );
}

/// Dropping a synced table removes it from the registry: its name is free again, and no
/// row waits for a new table to be given the old one's oid.
#[tokio::test]
async fn a_dropped_table_leaves_the_registry() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_dropped").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(
            "CREATE TABLE app.scratch (id int PRIMARY KEY);
             SELECT rowsync.enable('app.scratch');
             DROP TABLE app.scratch;",
        )
        .await
        .unwrap();
    let left: i64 = scalar(
        &admin,
        "SELECT count(*) FROM rowsync.synced WHERE name = 'scratch'",
        &[],
    )
    .await;
    assert_eq!(left, 0);
}
