//! Server events (`rowsync.send`): delivered after commit only, in order with the
//! transaction's row changes, resumable, and only to connections that follow the topic.

use rowsync_tests::bridge::{Bridge, Ws};
use rowsync_tests::{demo, sqlstate, Cluster};
use serde_json::{json, Value};

fn scope() -> String {
    format!("tasks?board_id={}", demo::LAUNCH)
}

fn event_named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["op"] == "event" && r["event"] == name
}

/// Sends as the backend: the test database's owner, who may.
async fn send(backend: &tokio_postgres::Client, topic: &str, event: &str, payload: Value) {
    backend
        .execute(
            "SELECT rowsync.send($1, $2, $3)",
            &[&topic, &event, &payload],
        )
        .await
        .unwrap_or_else(|e| panic!("send {topic} {event}: {e}"));
}

/// Whether `ws` holds a row of a `changes` message matching `matches` among the frames
/// it kept while waiting.
fn holds(ws: &Ws, matches: impl Fn(&Value) -> bool) -> bool {
    ws.kept()
        .iter()
        .filter(|f| f["type"] == "changes")
        .flat_map(|f| f["rows"].as_array().cloned().unwrap_or_default())
        .any(|r| matches(&r))
}

#[tokio::test]
async fn events_reach_their_topic_only_after_commit_and_in_order() {
    let cluster = Cluster::shared();
    let db = cluster.database("events_topic").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let mut bob_tab = Ws::connect(&bridge, "bob").await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    let notes = format!("tasks?board_id={}", demo::ALICE_NOTES);
    alice
        .request(json!({"type": "subscribe", "keys": [notes.clone()]}))
        .await;
    let backend = cluster.connect("postgres", &db).await;

    // Rolled back: never delivered. Committed with a row change: after the change.
    backend.batch_execute("BEGIN").await.unwrap();
    send(&backend, &scope(), "rolled_back", json!(1)).await;
    backend.batch_execute("ROLLBACK").await.unwrap();
    backend
        .batch_execute(&format!(
            "BEGIN; UPDATE app.tasks SET status = 'done' WHERE id = '{}'",
            demo::TASK_ANNOUNCE
        ))
        .await
        .unwrap();
    send(
        &backend,
        &scope(),
        "confetti",
        json!({"task": demo::TASK_ANNOUNCE}),
    )
    .await;
    backend.batch_execute("COMMIT").await.unwrap();
    let change = bob
        .wait_for_row("the change", |r| r["op"] == "upsert")
        .await;
    assert_eq!(change["id"], demo::TASK_ANNOUNCE);
    let next = bob.next().await;
    assert_eq!(next["type"], "changes", "{next}");
    assert!(next["cursor"].as_str().is_some());
    let event = &next["rows"][0];
    assert_eq!(
        event["op"], "event",
        "the event right after its change: {next}"
    );
    assert_eq!(event["event"], "confetti");
    assert_eq!(event["topic"], scope());
    assert_eq!(event["payload"], json!({"task": demo::TASK_ANNOUNCE}));
    assert!(!holds(&bob, event_named("rolled_back")));

    // user:<sub> reaches every connection of that user, and nobody else.
    send(&backend, "user:bob", "ping", json!("for bob")).await;
    send(&backend, "user:alice", "marker", Value::Null).await;
    for ws in [&mut bob, &mut bob_tab] {
        let ping = ws.wait_for_row("bob's event", event_named("ping")).await;
        assert_eq!(ping["topic"], "user:bob");
    }
    alice
        .wait_for_row("alice's marker", event_named("marker"))
        .await;
    assert!(
        !holds(&alice, |r| r["op"] == "event"),
        "alice saw {:?}",
        alice.kept()
    );
    bridge.stop().await;
}

/// A member of a presence room receives the events sent to the room's key; a connection
/// resuming from its token receives the events it missed, its user's included.
#[tokio::test]
async fn events_reach_rooms_and_resume() {
    let cluster = Cluster::shared();
    let db = cluster.database("events_resume").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let backend = cluster.connect("postgres", &db).await;
    let mut carol = Ws::connect(&bridge, "carol").await;
    let joined = carol
        .request(json!({"type": "presence", "action": "join", "room": scope(), "state": {}}))
        .await;
    assert_eq!(joined["type"], "ack", "{joined}");
    send(&backend, &scope(), "to_the_room", json!(1)).await;
    carol
        .wait_for_row("the room's event", event_named("to_the_room"))
        .await;

    let mut bob = Ws::connect(&bridge, "bob").await;
    let cursor = bob.subscribe(&[&scope()]).await;
    drop(bob);
    send(&backend, &scope(), "while_away", json!(2)).await;
    send(&backend, "user:bob", "for_bob_while_away", json!(3)).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor}))
        .await;
    bob.wait_for_row("the missed scope event", event_named("while_away"))
        .await;
    bob.wait_for_row("the missed user event", event_named("for_bob_while_away"))
        .await;
    bridge.stop().await;
}

/// Only granted roles send; bad topics, names and sizes are refused with their codes.
#[tokio::test]
async fn send_is_granted_and_checked() {
    let cluster = Cluster::shared();
    let db = cluster.database("events_rules").await;
    let backend = cluster.connect("postgres", &db).await;
    let user = cluster.connect("rowsync_authenticator", &db).await;
    user.batch_execute("SET ROLE app_user").await.unwrap();
    let denied = user
        .query("SELECT rowsync.send('user:bob', 'x')", &[])
        .await
        .expect_err("app_user may not send");
    assert_eq!(sqlstate(&denied), "42501");
    let big = json!("x".repeat(70_000));
    for (topic, event, payload, code) in [
        ("nonsense", "x", json!(1), "RS001"),
        ("tasks;DROP TABLE app.tasks:1", "x", json!(1), "RS001"),
        ("nosuch:1", "x", json!(1), "RS002"),
        ("user:bob", "", json!(1), "RS001"),
        ("user:bob", "x", big, "RS413"),
    ] {
        let error = backend
            .query(
                "SELECT rowsync.send($1, $2, $3)",
                &[&topic, &event, &payload],
            )
            .await
            .expect_err(topic);
        assert_eq!(sqlstate(&error), code, "{topic}");
    }
    backend
        .batch_execute("SELECT rowsync.grant_send('app_user')")
        .await
        .unwrap();
    let upper = demo::TASK_ANNOUNCE.to_uppercase();
    user.execute("SELECT rowsync.send('tasks:' || $1, 'hello')", &[&upper])
        .await
        .unwrap();
    let topic: String = rowsync_tests::scalar(
        &backend,
        "SELECT topic FROM rowsync.changes WHERE kind = 'event' ORDER BY xid DESC, cursor DESC LIMIT 1",
        &[],
    )
    .await;
    assert_eq!(
        topic,
        format!("tasks:{}", demo::TASK_ANNOUNCE),
        "uuids in lower case"
    );
}

/// An event sent in the transaction that removes a member from the board never reaches
/// that member, nor does one sent after: access is checked for the batch that carries the
/// event, not only when the connection subscribed or joined the room. Carol follows the
/// board both ways, in two tabs.
#[tokio::test]
async fn an_event_never_reaches_a_removed_member() {
    let cluster = Cluster::shared();
    let db = cluster.database("events_revoked").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.reauthorize = std::time::Duration::from_secs(3600);
    })
    .await;
    let mut carol = Ws::connect(&bridge, "carol").await;
    let mut carol_in_room = Ws::connect(&bridge, "carol").await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    for ws in [&mut carol, &mut bob] {
        ws.request(json!({"type": "subscribe", "keys": [scope()]}))
            .await;
    }
    carol_in_room
        .request(json!({"type": "presence", "action": "join", "room": scope(), "state": {}}))
        .await;
    let backend = cluster.connect("postgres", &db).await;
    backend
        .batch_execute(&format!(
            "BEGIN; DELETE FROM app.board_members WHERE board_id = '{}' AND user_id = 'carol'",
            demo::LAUNCH
        ))
        .await
        .unwrap();
    send(&backend, &scope(), "secret", json!("the launch date")).await;
    backend.batch_execute("COMMIT").await.unwrap();
    send(&backend, &scope(), "later", json!(2)).await;
    bob.wait_for_row("the later event", event_named("later"))
        .await;
    carol.wait_for("revoked", |f| f["type"] == "revoked").await;
    // Whatever carol was sent by now, she was sent before bob got the later event.
    send(&backend, &scope(), "marker", json!(3)).await;
    bob.wait_for_row("the marker", event_named("marker")).await;
    for tab in [&mut carol, &mut carol_in_room] {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            tab.wait_for("anything more", |_| false),
        )
        .await;
        for text in ["the launch date", "\"later\"", "\"marker\""] {
            assert!(
                !tab.raw.iter().any(|frame| frame.contains(text)),
                "carol got {text}: {:?}",
                tab.raw
            );
        }
    }
    bridge.stop().await;
}
