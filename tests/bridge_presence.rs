//! Presence and broadcast, on one bridge and across two through Postgres.

use rowsync_tests::bridge::{Bridge, Ws};
use rowsync_tests::{demo, Cluster};
use serde_json::json;

fn room() -> String {
    format!("tasks?board_id={}", demo::LAUNCH)
}

#[tokio::test]
async fn presence_and_typing_cross_bridges() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_presence").await;
    let one = Bridge::start(cluster, &db, |_| {}).await;
    let two = Bridge::start(cluster, &db, |_| {}).await;
    let mut alice = Ws::connect(&one, "alice").await;
    let mut bob = Ws::connect(&two, "bob").await;

    let joined = alice.request(json!({"type": "presence", "action": "join", "room": room(), "state": {"color": "red"}})).await;
    assert_eq!(joined["type"], "ack", "{joined}");
    let state = alice
        .wait_for("the room's state", |f| f["event"] == "state")
        .await;
    assert_eq!(state["members"][0]["user"], "alice");
    bob.request(
        json!({"type": "presence", "action": "join", "room": room(), "state": {"color": "blue"}}),
    )
    .await;
    let seen = alice
        .wait_for("bob joining, through Postgres", |f| {
            f["event"] == "diff" && f["joins"][0]["user"] == "bob"
        })
        .await;
    assert_eq!(seen["joins"][0]["state"], json!({"color": "blue"}));
    bob.wait_for("alice, re-announced or joined", |f| {
        (f["event"] == "diff" && f["joins"][0]["user"] == "alice")
            || (f["event"] == "state" && f.to_string().contains("alice"))
    })
    .await;

    for n in 0..20 {
        bob.send(
            json!({"type": "broadcast", "room": room(), "event": "typing", "payload": {"n": n}}),
        )
        .await;
    }
    let typing = alice
        .wait_for("bob typing", |f| {
            f["type"] == "broadcast" && f["payload"]["n"] == 19
        })
        .await;
    assert_eq!(typing["from"]["user"], "bob");
    assert_eq!(typing["event"], "typing");

    bob.request(json!({"type": "presence", "action": "leave", "room": room()}))
        .await;
    alice
        .wait_for("bob leaving", |f| {
            f["event"] == "diff" && f["leaves"].as_array().is_some_and(|l| !l.is_empty())
        })
        .await;
    drop(alice);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn presence_limits_and_rules() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_presence_rules").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.max_rooms = 1;
        c.max_presence_state_bytes = 64;
    })
    .await;
    let mut carol = Ws::connect(&bridge, "carol").await;
    let not_joined = carol
        .request(json!({"type": "broadcast", "room": room(), "event": "typing"}))
        .await;
    assert_eq!(not_joined["error"]["code"], "not_joined");
    let big = carol.request(json!({"type": "presence", "action": "join", "room": room(), "state": {"x": "y".repeat(100)}})).await;
    assert_eq!(big["error"]["code"], "state_too_large");
    assert_eq!(
        carol
            .request(json!({"type": "presence", "action": "join", "room": room()}))
            .await["type"],
        "ack"
    );
    let second = carol
        .request(json!({"type": "presence", "action": "join", "room": format!("tasks:{}", demo::TASK_ANNOUNCE)}))
        .await;
    assert_eq!(second["error"]["code"], "too_many_rooms");
    bridge.stop().await;
}

/// The bus between bridges is private: a plain database role can neither inject,
/// relabel nor remove members with NOTIFY, nor read the bus, nor eavesdrop on the
/// doorbell; and an event larger than a NOTIFY payload still crosses bridges.
#[tokio::test]
async fn the_bus_is_private_and_carries_large_events() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_bus").await;
    let one = Bridge::start(cluster, &db, |_| {}).await;
    let two = Bridge::start(cluster, &db, |_| {}).await;
    let mut alice = Ws::connect(&one, "alice").await;
    let mut bob = Ws::connect(&two, "bob").await;
    alice
        .request(json!({"type": "presence", "action": "join", "room": room(), "state": {}}))
        .await;
    bob.request(json!({"type": "presence", "action": "join", "room": room(), "state": {}}))
        .await;
    let bob_id = alice
        .wait_for("bob, through Postgres", |f| {
            f["event"] == "diff" && f["joins"][0]["user"] == "bob"
        })
        .await["joins"][0]["id"]
        .clone();

    let (eavesdropper, mut heard) = cluster.listen(&db).await;
    eavesdropper
        .batch_execute("LISTEN rowsync_bus")
        .await
        .unwrap();
    let attacker = cluster.connect("rowsync_authenticator", &db).await;
    attacker.batch_execute("SET ROLE app_user").await.unwrap();
    let bridge_of_bob = bob_id
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();
    let forged = json!({"bridge": bridge_of_bob, "events": [
        {"t": "broadcast", "room": room(), "id": bob_id, "user": "alice", "event": "phish", "payload": "http://evil"},
        {"t": "leave", "room": room(), "id": bob_id},
        {"t": "join", "room": room(), "id": bob_id, "user": "mallory", "state": {}},
    ]});
    attacker
        .execute(
            "SELECT pg_notify('rowsync_bus', $1)",
            &[&forged.to_string()],
        )
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM rowsync.bus",
        "INSERT INTO rowsync.bus (bridge, events) VALUES ('x', '[]')",
        "SELECT rowsync.bus_publish('x', '[]')",
    ] {
        let error = attacker.batch_execute(sql).await.expect_err(sql);
        assert_eq!(rowsync_tests::sqlstate(&error), "42501", "{sql}");
    }

    // A 20 KB broadcast crosses to the other bridge; nothing forged arrived before it.
    let big = "x".repeat(20_000);
    bob.send(json!({"type": "broadcast", "room": room(), "event": "big", "payload": big}))
        .await;
    let received = alice
        .wait_for("the large broadcast", |f| {
            f["type"] == "broadcast" && f["event"] == "big"
        })
        .await;
    assert_eq!(received["payload"].as_str().map(str::len), Some(20_000));
    for frame in alice.kept() {
        assert_ne!(frame["event"], "phish", "{frame}");
        assert!(
            frame["leaves"].as_array().is_none_or(|l| l.is_empty()),
            "{frame}"
        );
        assert!(!frame.to_string().contains("mallory"), "{frame}");
    }
    // Whoever listens hears only empty doorbells (and the forged payload it sent itself).
    let forged = forged.to_string();
    while let Ok(note) = heard.try_recv() {
        assert!(
            note.payload().is_empty() || note.payload() == forged,
            "{}",
            note.payload()
        );
    }
    one.stop().await;
    two.stop().await;
}
