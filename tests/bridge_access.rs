//! Access that follows policy: a connection's keys are checked again, and a user who lost
//! access to a board stops receiving its changes, its room's presence and broadcasts, and
//! cannot join its room again.

use rowsync_tests::bridge::{Bridge, Ws};
use rowsync_tests::{demo, Cluster};
use serde_json::{json, Value};

#[tokio::test]
async fn a_removed_member_is_revoked_and_hears_nothing_more() {
    let cluster = Cluster::shared();
    let db = cluster.database("access_revoked").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.reauthorize = std::time::Duration::from_millis(200)
    })
    .await;
    let board = format!("tasks?board_id={}", demo::LAUNCH);
    let task = format!("tasks:{}", demo::TASK_ANNOUNCE);
    let errands = format!("tasks?board_id={}", demo::BOB_ERRANDS);
    let mut bob = Ws::connect(&bridge, "bob").await;
    let ack = bob
        .request(json!({"type": "subscribe", "keys": [board, task, errands]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let join = json!({"type": "presence", "action": "join", "room": board, "state": {}});
    bob.request(join.clone()).await;
    let mut alice = Ws::connect(&bridge, "alice").await;
    alice.request(join.clone()).await;

    let admin = cluster.connect("postgres", &db).await;
    admin
        .execute(
            "DELETE FROM app.board_members WHERE board_id = $1::text::uuid AND user_id = 'bob'",
            &[&demo::LAUNCH],
        )
        .await
        .unwrap();
    // A periodic check can meet the deletion halfway (one key checked before its commit,
    // the next after): the keys may come in two `revoked` frames.
    let mut keys: Vec<String> = Vec::new();
    while keys.len() < 2 {
        let revoked = bob.wait_for("revoked", |f| f["type"] == "revoked").await;
        keys.extend(
            revoked["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    keys.sort();
    assert_eq!(keys, [task.as_str(), board.as_str()]);
    alice
        .wait_for("bob leaving the room", |f| {
            f["event"] == "diff" && f["leaves"].as_array().is_some_and(|l| !l.is_empty())
        })
        .await;

    // After it: no change, presence or broadcast of the board reaches bob, and he cannot
    // join its room again. His own board's change, made last, marks the end.
    alice
        .request(
            json!({"type": "broadcast", "room": board, "event": "typing", "payload": "secret"}),
        )
        .await;
    admin
        .execute(
            "UPDATE app.tasks SET title = 'after the removal' WHERE id = $1::text::uuid",
            &[&demo::TASK_ANNOUNCE],
        )
        .await
        .unwrap();
    admin
        .execute(
            "UPDATE app.tasks SET title = 'marker' WHERE id = $1::text::uuid",
            &[&demo::TASK_MILK],
        )
        .await
        .unwrap();
    bob.wait_for_row("his own board's change", |r| {
        r["id"] == demo::TASK_MILK && r["row"]["title"] == "marker"
    })
    .await;
    for frame in bob.kept() {
        let text = frame.to_string();
        assert!(
            !text.contains(demo::TASK_ANNOUNCE) && !text.contains("secret"),
            "after revocation: {frame}"
        );
    }
    let rejoin = bob.request(join).await;
    assert_eq!(rejoin["error"]["code"], "not_found", "{rejoin}");
    bridge.stop().await;
}
