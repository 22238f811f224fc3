//! Bad input at the bridge: tokens, origins, malformed and oversized frames, unknown
//! messages, bad keys and every limit. A bad frame does not end a healthy connection.

use rowsync_tests::bridge::{token, Bridge, Ws};
use rowsync_tests::{demo, Cluster};
use serde_json::json;

#[tokio::test]
async fn tokens_are_checked_at_connect_and_while_connected() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_tokens").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;

    let mut none = Ws::connect_url(&bridge.ws_url(None), None).await.unwrap();
    assert_eq!(none.welcome["error"]["code"], "unauthorized");
    assert_eq!(none.closed().await, Some(4001));
    let mut forged = Ws::connect_url(&bridge.ws_url(Some("not.a.token")), None)
        .await
        .unwrap();
    assert_eq!(forged.welcome["error"]["code"], "unauthorized");
    assert_eq!(forged.closed().await, Some(4001));
    let mut expired = Ws::connect_url(&bridge.ws_url(Some(&token("bob", -5))), None)
        .await
        .unwrap();
    assert_eq!(expired.welcome["error"]["code"], "token_expired");
    assert_eq!(expired.closed().await, Some(4100));

    // A token that expires during the connection ends it with a code that says: refresh.
    let mut short = Ws::connect_url(&bridge.ws_url(Some(&token("bob", 2))), None)
        .await
        .unwrap();
    assert_eq!(short.welcome["type"], "welcome");
    let error = short
        .wait_for("token_expired", |f| f["type"] == "error")
        .await;
    assert_eq!(error["error"]["code"], "token_expired");
    assert_eq!(short.closed().await, Some(4100));

    // Refreshing in time keeps it open; another user's token is refused.
    let mut refreshed = Ws::connect_url(&bridge.ws_url(Some(&token("bob", 2))), None)
        .await
        .unwrap();
    let ack = refreshed
        .request(json!({"type": "auth", "token": token("bob", 3600)}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let other = refreshed
        .request(json!({"type": "auth", "token": token("alice", 3600)}))
        .await;
    assert_eq!(other["error"]["code"], "unauthorized");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        refreshed.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn other_sites_cannot_open_connections() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_origin").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let url = bridge.ws_url(Some(&token("bob", 3600)));
    let refused = Ws::connect_url(&url, Some("http://evil.example"))
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("403"), "{refused}");
    assert!(Ws::connect_url(&url, Some("http://allowed.example"))
        .await
        .is_ok());
    let same_site = format!("http://{}", bridge.addr);
    assert!(Ws::connect_url(&url, Some(&same_site)).await.is_ok());
    bridge.stop().await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_lives_on() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_bad").await;
    let bridge = Bridge::start(cluster, &db, |c| c.max_subscriptions = 2).await;
    let mut bob = Ws::connect(&bridge, "bob").await;

    bob.send_raw("{not json".into()).await;
    assert_eq!(bob.next().await["error"]["code"], "bad_json");
    bob.send_raw("[1, 2]".into()).await;
    assert_eq!(bob.next().await["error"]["code"], "bad_message");
    let unknown = bob.request(json!({"type": "teleport"})).await;
    assert_eq!(unknown["error"]["code"], "unknown_type");
    let missing = bob.request(json!({"type": "subscribe"})).await;
    assert_eq!(missing["error"]["code"], "bad_message");
    let extra = bob.request(json!({"type": "ping", "surprise": true})).await;
    assert_eq!(extra["error"]["code"], "bad_message");
    for key in [
        "tasks;",
        "nosuch",
        "tasks?board_id=",
        "ta sks:1",
        "tasks:'; DROP TABLE app.tasks; --",
        "nosuch?col=1",
    ] {
        let reply = bob
            .request(json!({"type": "subscribe", "keys": [key]}))
            .await;
        assert_eq!(reply["type"], "error", "{key}: {reply}");
    }
    let unsynced = bob
        .request(json!({"type": "subscribe", "keys": ["nosuch:1"]}))
        .await;
    assert_eq!(unsynced["error"]["code"], "table_not_synced");
    let bad_tx = bob
        .request(json!({"type": "write", "tx": {"ops": [{"type": "set"}]}}))
        .await;
    assert_eq!(bad_tx["error"]["code"], "invalid_op");
    assert_eq!(bad_tx["error"]["sqlstate"], "RS001");

    let keys =
        [demo::TASK_MILK, demo::TASK_ANNOUNCE, demo::TASK_SIGNUP].map(|t| format!("tasks:{t}"));
    assert_eq!(
        bob.request(json!({"type": "subscribe", "keys": &keys[..2]}))
            .await["type"],
        "ack"
    );
    let over = bob
        .request(json!({"type": "subscribe", "keys": &keys[2..]}))
        .await;
    assert_eq!(over["error"]["code"], "too_many_subscriptions");
    assert_eq!(bob.request(json!({"type": "ping"})).await["type"], "pong");
    bridge.stop().await;
}

#[tokio::test]
async fn oversized_frames_and_floods_close_the_connection() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_limits").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.max_frame_bytes = 1024;
        c.messages_per_second = 5;
    })
    .await;
    let mut big = Ws::connect(&bridge, "bob").await;
    big.send_raw(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(4096)
    ))
    .await;
    assert_eq!(big.closed().await, Some(1009));

    let mut flood = Ws::connect(&bridge, "bob").await;
    for _ in 0..40 {
        flood.send(json!({"type": "ping"})).await;
    }
    let limited = flood
        .wait_for("rate_limited", |f| f["type"] == "error")
        .await;
    assert_eq!(limited["error"]["code"], "rate_limited");
    assert_eq!(flood.closed().await, Some(4102));
    bridge.stop().await;
}

/// A client that stops reading while frames keep coming fills the socket's buffers and
/// blocks the bridge's write: the bridge drops it after write_timeout instead of holding
/// the connection, and its queue, for as long as the client stays silent.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_write_timeout").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.write_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let silent = Ws::connect(&bridge, "bob").await;
    let backend = cluster.connect("postgres", &db).await;
    let payload = json!("x".repeat(60_000));
    for _ in 0..300 {
        backend
            .execute("SELECT rowsync.send('user:bob', 'big', $1)", &[&payload])
            .await
            .unwrap();
    }
    rowsync_tests::eventually("the silent connection dropped", || async {
        let (_, metrics) = bridge.http("GET", "/metrics", None, "").await;
        metrics
            .lines()
            .any(|l| l.starts_with("rowsync_slow_closes_total") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    drop(silent);
    bridge.stop().await;
}

/// A client still sending when the bridge closes it gets the close code, not a reset: the
/// bridge reads on after its close frame until the client answers it.
#[tokio::test]
async fn closes_reach_a_client_that_is_still_sending() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_close_codes").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.max_frame_bytes = 1024;
        c.messages_per_second = 5;
    })
    .await;
    for round in 0..4 {
        let mut flood = Ws::connect(&bridge, "bob").await;
        flood
            .burst((0..300).map(|_| r#"{"type":"ping"}"#.to_string()))
            .await;
        assert_eq!(flood.closed().await, Some(4102), "flood, round {round}");

        let mut big = Ws::connect(&bridge, "bob").await;
        let oversized = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2048));
        big.burst(
            std::iter::once(oversized).chain((0..300).map(|_| r#"{"type":"ping"}"#.to_string())),
        )
        .await;
        assert_eq!(big.closed().await, Some(1009), "oversized, round {round}");
    }
    bridge.stop().await;
}
