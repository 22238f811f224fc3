//! The bridge end to end: subscriptions see changes made through apply and through plain
//! SQL, reads and writes run as the user, and row-level security holds throughout.

use rowsync_tests::bridge::{token, Bridge, Ws};
use rowsync_tests::{demo, Cluster};
use serde_json::{json, Value};

/// An upsert of row `id` past its first version: the feed replays from its start tick,
/// so the example app's own insert of the row (version 1) may arrive before the change.
fn change_of<'a>(id: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |r: &Value| r["op"] == "upsert" && r["id"] == id && r["version"].as_i64() > Some(1)
}

#[tokio::test]
async fn subscribers_see_changes_from_apply_and_from_plain_sql() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_live").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    assert_eq!(bob.welcome["user"], "bob");
    let scope = format!("tasks?board_id={}", demo::LAUNCH);
    let ack = bob
        .request(json!({"type": "subscribe", "keys": [scope]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack["cursor"].as_str().is_some(), "an opaque token: {ack}");

    let mut alice = Ws::connect(&bridge, "alice").await;
    let written = alice
        .request(json!({"type": "write", "tx": {"id": "66666666-6666-4666-8666-666666666666", "ops": [
            {"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "status", "value": "doing"}
        ]}}))
        .await;
    assert_eq!(written["type"], "ack", "{written}");
    assert_eq!(written["result"]["rows"][0]["version"], json!(2));
    let change = bob
        .wait_for_row(
            "the change made through apply",
            change_of(demo::TASK_ANNOUNCE),
        )
        .await;
    assert_eq!(change["version"], json!(2));
    assert_eq!(change["row"]["status"], "doing", "the row itself: {change}");
    assert_eq!(change["keys"], json!([scope]));

    let backend = cluster.connect("postgres", &db).await;
    backend
        .batch_execute(&format!(
            "UPDATE app.tasks SET title = 'From a backend' WHERE id = '{}'",
            demo::TASK_SIGNUP
        ))
        .await
        .unwrap();
    let change = bob
        .wait_for_row("the change made in plain SQL", change_of(demo::TASK_SIGNUP))
        .await;
    assert_eq!(change["version"], json!(2));
    assert_eq!(change["row"]["title"], "From a backend");
    let fetched = bob
        .request(json!({"type": "fetch", "keys": [format!("tasks:{}", demo::TASK_SIGNUP)]}))
        .await;
    assert_eq!(fetched["records"][0]["row"]["title"], "From a backend");
    bridge.stop().await;
}

/// A task moved to another board leaves the old board's holders (`remove`) and reaches
/// the new board's subscribers with its data.
#[tokio::test]
async fn a_move_reaches_the_old_and_the_new_scope() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_move").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut launch = Ws::connect(&bridge, "alice").await;
    let mut notes = Ws::connect(&bridge, "alice").await;
    let launch_key = format!("tasks?board_id={}", demo::LAUNCH);
    launch
        .request(json!({"type": "subscribe", "keys": [launch_key]}))
        .await;
    launch
        .request(json!({"type": "fetch", "keys": [launch_key]}))
        .await;
    notes
        .request(
            json!({"type": "subscribe", "keys": [format!("tasks?board_id={}", demo::ALICE_NOTES)]}),
        )
        .await;
    let moved = launch
        .request(json!({"type": "write", "tx": {"ops": [
            {"type": "set", "table": "tasks", "id": demo::TASK_ANNOUNCE, "key": "board_id", "value": demo::ALICE_NOTES}
        ]}}))
        .await;
    assert_eq!(moved["type"], "ack", "{moved}");
    let left = launch
        .wait_for_row("the move, in the old board", |r| {
            r["id"] == demo::TASK_ANNOUNCE && r["op"] == "remove"
        })
        .await;
    assert_eq!(left["keys"], json!([launch_key]), "{left}");
    let arrived = notes
        .wait_for_row("the move, in the new board", change_of(demo::TASK_ANNOUNCE))
        .await;
    assert_eq!(arrived["row"]["board_id"], demo::ALICE_NOTES);
    bridge.stop().await;
}

/// Bob never receives, fetches or learns of Alice's private board.
#[tokio::test]
async fn a_user_never_learns_of_rows_their_policies_hide() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_rls").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    for key in [
        format!("tasks?board_id={}", demo::ALICE_NOTES),
        format!("tasks:{}", demo::TASK_SECRET),
        format!("boards:{}", demo::ALICE_NOTES),
    ] {
        let refused = bob
            .request(json!({"type": "subscribe", "keys": [key]}))
            .await;
        assert_eq!(refused["error"]["code"], "not_found", "{key}: {refused}");
        let joined = bob
            .request(json!({"type": "presence", "action": "join", "room": key, "state": {}}))
            .await;
        assert_eq!(
            joined["error"]["code"], "not_found",
            "{key} as a room: {joined}"
        );
    }
    let fetched = bob
        .request(json!({"type": "fetch", "keys": [format!("tasks:{}", demo::TASK_SECRET), format!("tasks?board_id={}", demo::ALICE_NOTES)]}))
        .await;
    assert_eq!(fetched["records"][0]["row"], Value::Null);
    assert_eq!(fetched["scopes"][0]["rows"], json!([]));
    let denied = bob
        .request(json!({"type": "write", "tx": {"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_SECRET, "key": "title", "value": "x"}]}}))
        .await;
    assert_eq!(denied["error"]["code"], "not_found");
    assert_eq!(denied["error"]["sqlstate"], "RS404");

    // Bob follows his board; Alice's private edits never reach him, his own board's do.
    bob.request(
        json!({"type": "subscribe", "keys": [format!("tasks?board_id={}", demo::BOB_ERRANDS)]}),
    )
    .await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    alice
        .request(json!({"type": "write", "tx": {"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_SECRET, "key": "title", "value": "Still secret"}]}}))
        .await;
    let backend = cluster.connect("postgres", &db).await;
    backend
        .batch_execute(&format!(
            "UPDATE app.tasks SET status = 'doing' WHERE id = '{}'",
            demo::TASK_MILK
        ))
        .await
        .unwrap();
    bob.wait_for_row("a change of Bob's own board", change_of(demo::TASK_MILK))
        .await;
    assert!(
        !bob.kept()
            .iter()
            .any(|f| f.to_string().contains(demo::TASK_SECRET)),
        "Bob learned of Alice's task: {:?}",
        bob.kept()
    );
    bridge.stop().await;
}

#[tokio::test]
async fn http_reads_and_writes_as_the_token_user() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_http").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let bob = token("bob", 3600);
    let tx = json!({"ops": [{"type": "set", "table": "tasks", "id": demo::TASK_MILK, "key": "status", "value": "done", "version": 1}]}).to_string();
    let (status, body) = bridge
        .http("POST", "/v1/transactions", Some(&bob), &tx)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = bridge
        .http("POST", "/v1/transactions", Some(&bob), &tx)
        .await;
    assert_eq!(status, 409, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "conflict");
    assert_eq!(
        error["error"]["detail"],
        "op 0 expected version 1, the row is at version 2"
    );
    let pointers = json!([
        format!("tasks:{}", demo::TASK_MILK),
        format!("tasks:{}", demo::TASK_SECRET)
    ])
    .to_string();
    let (status, body) = bridge
        .http("POST", "/v1/records", Some(&bob), &pointers)
        .await;
    assert_eq!(status, 200);
    let records: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(records["rows"][0]["row"]["status"], "done");
    assert_eq!(records["rows"][1]["row"], Value::Null);
    assert_eq!(
        bridge.http("POST", "/v1/records", None, &pointers).await.0,
        401
    );
    assert_eq!(
        bridge
            .http("POST", "/v1/records", Some(&token("bob", -10)), &pointers)
            .await
            .0,
        401
    );
    assert_eq!(
        bridge
            .http("POST", "/v1/records", Some(&bob), "{nope")
            .await
            .0,
        400
    );
    let (status, metrics) = bridge.http("GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("rowsync_errors_total{code=\"conflict\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("rowsync_change_delivery_seconds_bucket"));
    bridge.stop().await;
}
