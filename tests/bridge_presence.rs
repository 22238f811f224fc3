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
