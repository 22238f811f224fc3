//! The change feed: commit-safe order, NOTIFY wake-ups, the sleep protocol, retention.

use rowsync_tests::{demo, eventually, scalar, sqlstate, Cluster};
use std::time::Duration;
use tokio::time::timeout;
use tokio_postgres::Client;

async fn read_all(reader: &Client, after: i64) -> Vec<(i64, String)> {
    reader
        .query(
            "SELECT cursor, row_id FROM rowsync.read_changes($1, 1000)",
            &[&after],
        )
        .await
        .expect("read_changes")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Reads from `after` until at least `count` changes are readable.
async fn read_at_least(reader: &Client, after: i64, count: usize) -> Vec<(i64, String)> {
    eventually(&format!("{count} changes after {after}"), || async {
        let changes = read_all(reader, after).await;
        (changes.len() >= count).then_some(changes)
    })
    .await
}

/// The newest change in the log, read directly: `rowsync.head()` may lag behind while
/// another test's transaction holds the cluster-wide horizon.
async fn newest(reader: &Client) -> i64 {
    scalar(
        reader,
        "SELECT coalesce(max(cursor), 0) FROM rowsync.changes",
        &[],
    )
    .await
}

async fn head(reader: &Client) -> i64 {
    scalar(reader, "SELECT rowsync.head()", &[]).await
}

fn touch(task: &str) -> String {
    format!("UPDATE app.tasks SET title = title || '!' WHERE id = '{task}'")
}

/// A later cursor that commits first is held back until the earlier one commits, and a
/// reader that follows cursors sees every change exactly once.
#[tokio::test]
async fn out_of_order_commits_are_never_skipped() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_order").await;
    let reader = cluster.connect("postgres", &db).await;
    let start = newest(&reader).await;
    let first = cluster.connect("postgres", &db).await;
    let second = cluster.connect("postgres", &db).await;

    // `first` takes the lower cursor, `second` the higher, and `second` commits first.
    first
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    second
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_SIGNUP)))
        .await
        .unwrap();
    second.batch_execute("COMMIT").await.unwrap();
    let early = read_all(&reader, start).await;
    assert!(
        early.is_empty(),
        "read {early:?} while an earlier cursor is uncommitted"
    );

    first.batch_execute("COMMIT").await.unwrap();
    let all = read_at_least(&reader, start, 2).await;
    let ids: Vec<&str> = all.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP]);
}

/// The harder order: a transaction that got its xid first takes its cursor last and
/// commits first. The reader may deliver it first, but never skips the other.
#[tokio::test]
async fn a_reader_resuming_from_its_cursor_misses_nothing() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_resume").await;
    let reader = cluster.connect("postgres", &db).await;
    let start = newest(&reader).await;
    let early_xid = cluster.connect("postgres", &db).await;
    let late_xid = cluster.connect("postgres", &db).await;

    early_xid
        .batch_execute("BEGIN; CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let xid_first: String = scalar(&early_xid, "SELECT pg_current_xact_id()::text", &[]).await;
    late_xid
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    early_xid
        .batch_execute(&touch(demo::TASK_SIGNUP))
        .await
        .unwrap();
    let xid_second: String = scalar(&late_xid, "SELECT pg_current_xact_id()::text", &[]).await;
    assert!(xid_first.parse::<u64>().unwrap() < xid_second.parse::<u64>().unwrap());
    early_xid.batch_execute("COMMIT").await.unwrap();

    // The committed change with the later cursor is readable while the earlier cursor's
    // transaction still runs, because its xid is older than that transaction's.
    let mut seen = read_at_least(&reader, start, 1).await;
    assert_eq!(seen.len(), 1);
    let cursor = seen[0].0;
    late_xid.batch_execute("COMMIT").await.unwrap();
    seen.extend(read_at_least(&reader, cursor, 1).await);
    let mut ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP],
        "every change once: {seen:?}"
    );
    let last = seen.last().unwrap().0;
    eventually("head() to reach the last change", || async {
        (head(&reader).await == last).then_some(())
    })
    .await;
}

/// One notification per transaction, after commit only, and none after a rollback.
#[tokio::test]
async fn notify_after_commit_once_and_never_after_rollback() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_notify").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .execute("SELECT rowsync.listener_sleep('test')", &[])
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
    // Postgres delivers notifications only at commit: nothing can be queued yet.
    assert!(notes.try_recv().is_err());
    writer.batch_execute("COMMIT").await.unwrap();
    let note = timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("a wake-up")
        .unwrap();
    assert_eq!(note.channel(), "rowsync");
    assert!(
        note.payload().parse::<u64>().is_ok(),
        "payload is an xid: {}",
        note.payload()
    );

    writer
        .batch_execute(&format!("BEGIN; {}; ROLLBACK", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    // A marker transaction: its notification arriving next proves none came in between.
    writer
        .batch_execute(&touch(demo::TASK_SIGNUP))
        .await
        .unwrap();
    let marker = timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("marker")
        .unwrap();
    let marker_xid: String =
        scalar(&writer, "SELECT max(xid)::text FROM rowsync.changes", &[]).await;
    assert_eq!(marker.payload(), marker_xid, "a rolled-back write notified");
    assert!(
        notes.try_recv().is_err(),
        "three rows in one transaction notified more than once"
    );
}

/// While every listener is awake, writers skip NOTIFY (the write path avoids the cliff).
#[tokio::test]
async fn awake_listeners_silence_writers() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_awake").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .execute("SELECT rowsync.listener_awake('a')", &[])
        .await
        .unwrap();
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    listener
        .execute("SELECT rowsync.listener_sleep('b')", &[])
        .await
        .unwrap();
    writer
        .batch_execute(&touch(demo::TASK_SIGNUP))
        .await
        .unwrap();
    let note = timeout(Duration::from_secs(10), notes.recv())
        .await
        .expect("wake-up")
        .unwrap();
    let second_xid: String = scalar(
        &writer,
        "SELECT xid::text FROM rowsync.changes WHERE row_id = $1 ORDER BY cursor DESC LIMIT 1",
        &[&demo::TASK_SIGNUP],
    )
    .await;
    assert_eq!(
        note.payload(),
        second_xid,
        "the write made while all were awake notified"
    );
}

/// The lost wake-up: a writer that saw the listener awake (and skipped NOTIFY) commits
/// after the listener's last poll. The listener's sleep protocol still reads it.
#[tokio::test]
async fn falling_asleep_never_loses_a_change() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_sleep").await;
    let (listener, mut notes) = cluster.listen(&db).await;
    listener
        .execute("SELECT rowsync.listener_awake('l')", &[])
        .await
        .unwrap();
    let start = newest(&listener).await;

    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&format!("BEGIN; {}", touch(demo::TASK_ANNOUNCE)))
        .await
        .unwrap();
    // The listener's last poll finds nothing; it falls asleep.
    assert!(read_all(&listener, start).await.is_empty());
    listener
        .execute("SELECT rowsync.listener_sleep('l')", &[])
        .await
        .unwrap();
    let watermark: String =
        scalar(&listener, "SELECT rowsync.listener_watermark()::text", &[]).await;
    let settled = "SELECT rowsync.listener_settled($1::text::xid8)";
    let before: bool = scalar(&listener, settled, &[&watermark]).await;
    assert!(
        !before,
        "settled while a writer that saw the listener awake is running"
    );

    writer.batch_execute("COMMIT").await.unwrap();
    eventually("the listener to settle", || async {
        let done: bool = scalar(&listener, settled, &[&watermark]).await;
        done.then_some(())
    })
    .await;
    // The one read after settling finds the change no NOTIFY announced.
    let changes = read_all(&listener, start).await;
    assert_eq!(changes.len(), 1);
    assert!(
        notes.try_recv().is_err(),
        "the writer saw the listener awake, so it did not notify"
    );
}

#[tokio::test]
async fn a_cursor_out_of_retention_is_told_to_resync() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_retention").await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(&touch(demo::TASK_ANNOUNCE))
        .await
        .unwrap();
    let old = newest(&admin).await;
    admin
        .batch_execute(
            "UPDATE rowsync.settings SET change_retention = '0 seconds'; SELECT rowsync.prune()",
        )
        .await
        .unwrap();
    let error = admin
        .query("SELECT * FROM rowsync.read_changes($1)", &[&old])
        .await
        .expect_err("a pruned cursor");
    assert_eq!(sqlstate(&error), "RS410");
    assert_eq!(head(&admin).await, 0);
}

#[tokio::test]
async fn only_feed_roles_read_the_feed() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_grants").await;
    let bridge = rowsync_tests::authenticator(&db).await;
    assert!(bridge
        .query("SELECT * FROM rowsync.read_changes(0)", &[])
        .await
        .is_ok());
    let user = cluster.connect("rowsync_authenticator", &db).await;
    user.batch_execute("SET ROLE app_user").await.unwrap();
    for sql in [
        "SELECT * FROM rowsync.read_changes(0)",
        "SELECT * FROM rowsync.changes",
        "SELECT rowsync.listener_awake('x')",
        "SELECT rowsync.prune()",
        "SELECT * FROM rowsync.listeners",
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

/// The capture function refuses to run other than as rowsync.enable installs it, and a
/// scope column dropped after enabling reads as null instead of failing writes.
#[tokio::test]
async fn capture_refuses_misuse_and_survives_a_dropped_scope() {
    let cluster = Cluster::shared();
    let db = cluster.database("feed_capture_misuse").await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(
            "CREATE TABLE app.misused (id int PRIMARY KEY, version bigint);
             CREATE TRIGGER t AFTER INSERT ON app.misused FOR EACH STATEMENT
                 EXECUTE FUNCTION rowsync._capture('misused', 'id');",
        )
        .await
        .unwrap();
    let error = writer
        .batch_execute("INSERT INTO app.misused VALUES (1, 1)")
        .await
        .expect_err("a statement-level capture must fail");
    assert!(
        error
            .as_db_error()
            .is_some_and(|e| e.message().contains("FOR EACH ROW")),
        "{error:?}"
    );

    writer
        .batch_execute(
            "CREATE TABLE app.grouped (id int PRIMARY KEY, grp int);
             SELECT rowsync.enable('app.grouped', '{grp}');
             INSERT INTO app.grouped VALUES (1, 5);
             ALTER TABLE app.grouped DROP COLUMN grp;",
        )
        .await
        .unwrap();
    let start = newest(&writer).await;
    writer
        .batch_execute("UPDATE app.grouped SET id = id WHERE id = 1")
        .await
        .unwrap();
    let scopes: String = scalar(
        &writer,
        "SELECT new_scopes::text FROM rowsync.changes WHERE cursor > $1 AND tbl = 'grouped'",
        &[&start],
    )
    .await;
    assert_eq!(scopes, r#"{"grp": null}"#);
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
