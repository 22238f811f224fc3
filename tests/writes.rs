//! Writes over real sessions: version races, idempotent retries, undo beside a
//! collaborator, and plain SQL feeding the same log.

use rowsync_tests::{apply_as, demo, eventually, scalar, sqlstate, Cluster};
use serde_json::{json, Value};
use tokio_postgres::Client;

async fn begin_as(client: &Client, sub: &str) {
    let claims = json!({ "sub": sub }).to_string();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT set_config('role', 'app_user', true), set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await
        .unwrap();
}

/// Waits until some session is blocked on a lock.
async fn someone_waits_on_a_lock(admin: &Client) {
    eventually("a session to wait on a row lock", || async {
        let waiting: i64 = scalar(
            admin,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        )
        .await;
        (waiting > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_sessions_racing_on_one_version_one_wins() {
    let cluster = Cluster::shared();
    let db = cluster.database("writes_race").await;
    let admin = cluster.connect("postgres", &db).await;
    let first = rowsync_tests::authenticator(&db).await;
    let mut second = rowsync_tests::authenticator(&db).await;
    let op = |title: &str| json!({"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "title", "value": title, "version": 1}]});

    begin_as(&first, "alice").await;
    first
        .query_one("SELECT rowsync.apply($1)", &[&op("alice")])
        .await
        .unwrap();
    let racer = tokio::spawn(async move { apply_as(&mut second, "bob", op("bob")).await });
    someone_waits_on_a_lock(&admin).await;
    first.batch_execute("COMMIT").await.unwrap();

    let error = racer
        .await
        .unwrap()
        .expect_err("the second writer based on version 1 loses");
    assert_eq!(sqlstate(&error), "RS409");
    let detail = error
        .as_db_error()
        .unwrap()
        .detail()
        .unwrap_or_default()
        .to_string();
    assert_eq!(detail, "op 0 expected version 1, the row is at version 2");
    let title: String = scalar(
        &admin,
        "SELECT title FROM app.tasks WHERE id = $1::text::uuid",
        &[&demo::TASK_ANNOUNCE],
    )
    .await;
    assert_eq!(title, "alice");
}

/// A retry of a transaction still in flight waits for it, then returns its result, as
/// does the next retry: the ops apply once.
#[tokio::test]
async fn concurrent_retries_apply_once() {
    let cluster = Cluster::shared();
    let db = cluster.database("writes_retry").await;
    let admin = cluster.connect("postgres", &db).await;
    let first = rowsync_tests::authenticator(&db).await;
    let mut second = rowsync_tests::authenticator(&db).await;
    let tx = json!({"id": "44444444-4444-4444-8444-444444444444", "ops": [
        {"type": "listInsert", "table": "tasks", "id": demo::TASK_SIGNUP, "key": "tags", "value": "retried"}
    ]});

    begin_as(&first, "bob").await;
    let original: Value = scalar(&first, "SELECT rowsync.apply($1)", &[&tx]).await;
    let retry = tx.clone();
    let racer = tokio::spawn(async move {
        let outcome = apply_as(&mut second, "bob", retry.clone()).await;
        (outcome, apply_as(&mut second, "bob", retry).await)
    });
    someone_waits_on_a_lock(&admin).await;
    first.batch_execute("COMMIT").await.unwrap();
    let (in_flight, later) = racer.await.unwrap();
    assert_eq!(in_flight.unwrap(), original);
    assert_eq!(later.unwrap(), original);
    let row: Value = scalar(
        &admin,
        "SELECT to_jsonb(t) FROM app.tasks t WHERE id = $1::text::uuid",
        &[&demo::TASK_SIGNUP],
    )
    .await;
    assert_eq!(row["tags"], json!(["bug", "web", "retried"]));
    assert_eq!(row["version"], json!(2));

    // The first call rolls back instead: the waiting retry applies the ops itself.
    let first = rowsync_tests::authenticator(&db).await;
    let mut second = rowsync_tests::authenticator(&db).await;
    let tx = json!({"id": "44444444-4444-4444-8444-444444444445", "ops": [
        {"type": "listInsert", "table": "tasks", "id": demo::TASK_SIGNUP, "key": "tags", "value": "again"}
    ]});
    begin_as(&first, "bob").await;
    let _: Value = scalar(&first, "SELECT rowsync.apply($1)", &[&tx]).await;
    let racer = tokio::spawn(async move { apply_as(&mut second, "bob", tx).await });
    someone_waits_on_a_lock(&admin).await;
    first.batch_execute("ROLLBACK").await.unwrap();
    let applied = racer.await.unwrap().unwrap();
    assert_eq!(applied["rows"][0]["version"], json!(3));
    assert_eq!(
        applied["rows"][0]["row"]["tags"],
        json!(["bug", "web", "retried", "again"])
    );
}

/// Undo reverts only what still holds what this user wrote.
#[tokio::test]
async fn undo_does_not_clobber_a_collaborator() {
    let db = Cluster::shared().database("writes_undo").await;
    let mut alice = rowsync_tests::authenticator(&db).await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let task = demo::TASK_ANNOUNCE;
    let mine = apply_as(
        &mut alice,
        "alice",
        json!({"ops": [
            {"type": "set", "table": "tasks", "id": task, "key": "title", "value": "Alice's title"},
            {"type": "set", "table": "tasks", "id": task, "key": "status", "value": "doing"},
            {"type": "set", "table": "tasks", "id": task, "key": "meta.color", "value": "red"}
        ]}),
    )
    .await
    .unwrap();
    // Bob changes the status after Alice.
    apply_as(&mut bob, "bob", json!({"ops": [{"type": "set", "table": "tasks", "id": task, "key": "status", "value": "done"}]}))
        .await
        .unwrap();
    let undo = apply_as(&mut alice, "alice", json!({"ops": mine["inverse"].clone()}))
        .await
        .unwrap();
    let row = &undo["rows"][0]["row"];
    assert_eq!(row["title"], json!("Write the announcement"));
    assert_eq!(row["status"], json!("done"), "Bob's later edit survives");
    assert_eq!(row["meta"], json!({}));
    assert_eq!(
        undo["skipped"],
        json!([{"index": 1, "table": "tasks", "id": task, "key": "status", "reason": "changed"}])
    );
    // Redo is the undo's inverse.
    let redo = apply_as(&mut alice, "alice", json!({"ops": undo["inverse"].clone()}))
        .await
        .unwrap();
    assert_eq!(redo["rows"][0]["row"]["title"], json!("Alice's title"));
}

/// Writes from any backend in plain SQL bump versions and reach the feed like apply's.
#[tokio::test]
async fn plain_sql_and_apply_share_the_feed() {
    let cluster = Cluster::shared();
    let db = cluster.database("writes_plain").await;
    let feed = rowsync_tests::authenticator(&db).await;
    // A tick after the demo's own changes: the feed is read from there.
    let start: i64 = scalar(&feed, "SELECT rowsync.tick()", &[]).await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let applied = apply_as(&mut bob, "bob", json!({"id": "55555555-5555-4555-8555-555555555555", "ops": [
        {"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "status", "value": "doing"}
    ]})).await.unwrap();
    let backend = cluster.connect("postgres", &db).await;
    backend
        .batch_execute(&format!(
            "UPDATE app.tasks SET status = 'done' WHERE id = '{}'",
            demo::TASK_MILK
        ))
        .await
        .unwrap();
    let changes = feed
        .query(
            "SELECT cursor, tx_id::text, version, kind, new_scopes FROM rowsync.advance($1)",
            &[&start],
        )
        .await
        .unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[0].get::<_, i64>(0),
        applied["cursor"].as_i64().unwrap()
    );
    assert_eq!(
        changes[0].get::<_, Option<String>>(1).as_deref(),
        Some("55555555-5555-4555-8555-555555555555")
    );
    assert_eq!(changes[1].get::<_, Option<String>>(1), None);
    assert_eq!(
        (changes[0].get::<_, i64>(2), changes[1].get::<_, i64>(2)),
        (2, 3)
    );
    assert_eq!(changes[1].get::<_, String>(3), "update");
    assert_eq!(
        changes[1].get::<_, Value>(4),
        json!({"board_id": demo::BOB_ERRANDS})
    );
}

/// A non-superuser who owns a database installs the extension (it is trusted).
#[tokio::test]
async fn a_database_owner_installs_the_extension() {
    let cluster = Cluster::shared();
    let admin = cluster.connect("postgres", "postgres").await;
    admin
        .batch_execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') THEN
                 CREATE ROLE app_owner LOGIN; END IF; END $$",
        )
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE owned_by_app OWNER app_owner")
        .await
        .unwrap();
    let owner = cluster.connect("app_owner", "owned_by_app").await;
    owner
        .batch_execute(
            "CREATE EXTENSION rowsync;
             CREATE TABLE notes (id uuid PRIMARY KEY, body text);
             SELECT rowsync.enable('notes');",
        )
        .await
        .unwrap();
    let result: Value = scalar(&owner, "SELECT rowsync.apply($1)",
            &[&json!({"ops": [{"type": "create", "table": "notes", "id": "00000000-0000-4000-8000-000000000099", "value": {"body": "hi"}}]})],).await;
    assert_eq!(result["rows"][0]["row"]["body"], json!("hi"));
    let superuser: bool = scalar(
        &owner,
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
        &[],
    )
    .await;
    assert!(!superuser);
}

/// A transaction with an id that fails, applied as a user, reports its own error and
/// leaves the id free (through `apply`, and through the internal `_apply`, whose failure
/// is a value and whose claim is released); a stored result is written once: its user
/// can neither rewrite nor delete it.
#[tokio::test]
async fn a_failed_transaction_id_stays_free_and_stored_results_are_final() {
    let db = Cluster::shared().database("writes_failed_id").await;
    let mut bob = rowsync_tests::authenticator(&db).await;
    let id = "66666666-6666-4666-8666-666666666666";
    let set = |version: i64| {
        json!({"id": id, "ops": [{"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE,
                                  "key": "title", "value": "once", "version": version}]})
    };
    let error = apply_as(&mut bob, "bob", set(7))
        .await
        .expect_err("a stale version");
    assert_eq!(sqlstate(&error), "RS409", "{error:?}");

    begin_as(&bob, "bob").await;
    let failure: Value = scalar(&bob, "SELECT rowsync._apply($1)", &[&set(7)]).await;
    assert_eq!(failure["error"]["sqlstate"], "RS409", "{failure}");
    let claims: i64 = scalar(
        &bob,
        "SELECT count(*) FROM rowsync.applied WHERE tx_id = $1::text::uuid",
        &[&id],
    )
    .await;
    assert_eq!(claims, 0, "the failed call's claim is released");
    bob.batch_execute("COMMIT").await.unwrap();

    let applied = apply_as(&mut bob, "bob", set(1)).await.unwrap();
    assert_eq!(applied["rows"][0]["version"], json!(2));
    begin_as(&bob, "bob").await;
    for sql in [
        "UPDATE rowsync.applied SET result = '{\"forged\": true}' WHERE tx_id = $1::text::uuid",
        "DELETE FROM rowsync.applied WHERE tx_id = $1::text::uuid",
    ] {
        let touched = bob.execute(sql, &[&id]).await.unwrap();
        assert_eq!(touched, 0, "{sql}");
    }
    bob.batch_execute("COMMIT").await.unwrap();
    assert_eq!(apply_as(&mut bob, "bob", set(1)).await.unwrap(), applied);
}
