//! Nothing is lost: a client resuming from its cursor, a Postgres restart under a running
//! bridge, a bridge restart, and several bridges on one database.

use rowsync_tests::bridge::{Bridge, Ws};
use rowsync_tests::{demo, Cluster, OpenTransactions};
use serde_json::{json, Value};

async fn touch(cluster: &Cluster, db: &str, task: &str, title: &str) {
    let backend = cluster.connect("postgres", db).await;
    backend
        .batch_execute(&format!(
            "UPDATE app.tasks SET title = '{title}' WHERE id = '{task}'"
        ))
        .await
        .unwrap();
}

fn scope() -> String {
    format!("tasks?board_id={}", demo::LAUNCH)
}

/// A client that reconnects with its last cursor receives every change it missed, in
/// order, then the live ones.
#[tokio::test]
async fn resuming_from_a_cursor_delivers_every_missed_change_in_order() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_resume").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let cursor = bob.subscribe(&[&scope()]).await;
    drop(bob);

    for (i, task) in [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP, demo::TASK_ANNOUNCE]
        .iter()
        .enumerate()
    {
        touch(cluster, &db, task, &format!("offline {i}")).await;
    }
    touch(cluster, &db, demo::TASK_MILK, "outside the scope").await;

    let mut bob = Ws::connect(&bridge, "bob").await;
    let ack = bob
        .request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // Catch-up sends every missed row; any that arrive live instead may coalesce per row
    // (each carries the row as it is, so the newest says all). Either way each row's
    // newest version arrives, versions only grow, and nothing outside the scope.
    let mut newest = std::collections::BTreeMap::new();
    while newest.get(demo::TASK_ANNOUNCE) != Some(&3) || newest.get(demo::TASK_SIGNUP) != Some(&2) {
        let frame = bob
            .wait_for_row("a missed change", |f| f["op"] == "upsert")
            .await;
        let id = frame["id"].as_str().unwrap().to_string();
        let version = frame["version"].as_i64().unwrap();
        assert_ne!(id, demo::TASK_MILK, "a change outside the scope");
        let previous = newest.insert(id, version).unwrap_or(0);
        assert!(version > previous, "versions go forward: {frame}");
    }
    touch(cluster, &db, demo::TASK_SIGNUP, "live again").await;
    let live = bob
        .wait_for_row("a live change", |f| f["op"] == "upsert")
        .await;
    assert_eq!(
        (live["id"].as_str(), live["version"].as_i64()),
        (Some(demo::TASK_SIGNUP), Some(3))
    );
    bridge.stop().await;
}

/// Tokens the log no longer holds, tokens of another database and tokens that were never
/// issued all get `resync` for the keys, never a silent gap.
#[tokio::test]
async fn stale_foreign_and_forged_tokens_resync() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_resync").await;
    let other_db = cluster.database("bridge_resync_other").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let other = Bridge::start(cluster, &other_db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let old = bob.subscribe(&[&scope()]).await;
    let mut elsewhere = Ws::connect(&other, "bob").await;
    let foreign = elsewhere.subscribe(&[&scope()]).await;
    drop((bob, elsewhere));
    touch(cluster, &db, demo::TASK_ANNOUNCE, "old news").await;
    let admin = cluster.connect("postgres", &db).await;
    // A tick of the change, committed before the prune begins: retention counts from the
    // prune's transaction start, so the prune keeps only ticks after the old token's.
    for sql in [
        "SELECT rowsync.tick()",
        "UPDATE rowsync.settings SET change_retention = '0 seconds'",
        "SELECT rowsync.prune()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    // A tick the log keeps, with its time altered: a token that was never issued. The
    // bridge's position is that tick once it has routed a change made after the prune.
    let signup = format!("tasks:{}", demo::TASK_SIGNUP);
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [signup]}))
        .await;
    touch(cluster, &db, demo::TASK_SIGNUP, "after the prune").await;
    let changes = bob
        .wait_for("the change after the prune", |f| {
            f["type"] == "changes" && f["rows"][0]["op"] == "upsert"
        })
        .await;
    let fresh = bob.subscribe(&[&signup]).await;
    drop(bob);
    let replace = |token: &str, at: usize| {
        let mut bytes = token.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let forged = replace(&fresh, fresh.len() - 1);
    // A changes frame's token is the long form: a change's (xid, cursor) in its batch.
    // Moved on by a few bytes, it would skip changes if only its tick were checked.
    let partial = changes["cursor"].as_str().unwrap();
    let key_byte = partial.len() * 6 / 8 - 8 - 2;
    let moved = replace(partial, key_byte * 8 / 6);
    for (cursor, reason) in [
        (old.as_str(), "cursor_gone"),
        (foreign.as_str(), "cursor_foreign"),
        (forged.as_str(), "cursor_invalid"),
        (moved.as_str(), "cursor_invalid"),
        ("not a token", "cursor_invalid"),
    ] {
        let mut bob = Ws::connect(&bridge, "bob").await;
        let ack = bob
            .request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        let resync = bob
            .wait_for(&format!("resync ({reason})"), |f| f["type"] == "resync")
            .await;
        assert_eq!(resync["keys"], json!([scope()]));
        assert_eq!(resync["reason"], reason, "{cursor}");
    }
    bridge.stop().await;
    other.stop().await;
}

/// Transactions left open (a write on another table, a session in another database, a
/// prepared transaction, a write on a synced table) hold back nothing: a change
/// committed meanwhile reaches its subscriber while they are still open.
#[tokio::test]
async fn open_transactions_do_not_delay_delivery() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_stall").await;
    let other_db = cluster.database("bridge_stall_other").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    let held = OpenTransactions::begin(cluster, &db, &other_db).await;
    for round in 2..5 {
        touch(cluster, &db, demo::TASK_ANNOUNCE, &format!("round {round}")).await;
        bob.wait_for_row("the change, while transactions stay open", |f| {
            f["op"] == "upsert" && f["id"] == demo::TASK_ANNOUNCE && f["version"] == round
        })
        .await;
    }
    held.end(false).await;
    bridge.stop().await;
}

/// Postgres restarts under a running bridge: changes made while the bridge reconnects
/// and after reach the subscriber; the bridge needs no help.
#[tokio::test]
async fn a_postgres_restart_loses_nothing() {
    let cluster = Cluster::private("restart");
    let db = cluster.database("restart").await;
    let bridge = Bridge::start(&cluster, &db, |c| {
        c.feed_safety_poll = std::time::Duration::from_secs(60)
    })
    .await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    touch(&cluster, &db, demo::TASK_ANNOUNCE, "before").await;
    bob.wait_for_row("the change before the restart", |f| {
        f["op"] == "upsert" && f["version"] == 2
    })
    .await;

    cluster.restart();
    touch(&cluster, &db, demo::TASK_ANNOUNCE, "during").await;
    let frame = bob
        .wait_for_row("the change made as the bridge reconnects", |f| {
            f["op"] == "upsert" && f["version"] == 3
        })
        .await;
    assert_eq!(frame["id"], demo::TASK_ANNOUNCE);
    touch(&cluster, &db, demo::TASK_SIGNUP, "after").await;
    bob.wait_for_row("the change after the restart", |f| {
        f["op"] == "upsert" && f["id"] == demo::TASK_SIGNUP
    })
    .await;
    bridge.stop().await;
}

/// Writes keep coming while the bridge is replaced and then Postgres restarts: the client
/// follows from its last cursor throughout, and every one of 120 committed inserts
/// reaches it (at least once: the feed replays from a batch's start after a restart).
#[tokio::test]
async fn restarts_under_a_stream_of_writes_lose_nothing() {
    const WRITES: usize = 120;
    let cluster = Cluster::private("stream");
    let db = cluster.database("stream").await;
    let url = cluster.url("postgres", &db);
    let id = |i: usize| format!("00000000-0000-4000-8000-{:012}", 500_000 + i);
    let ids: Vec<String> = (0..WRITES).map(id).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = None;
    // Reads changes until `until` of the stream's ids have arrived; keeps the cursor.
    async fn follow(
        ws: &mut Ws,
        ids: &[String],
        seen: &mut std::collections::BTreeSet<String>,
        cursor: &mut Option<String>,
        until: usize,
    ) {
        while seen.len() < until {
            let frame = ws
                .wait_for("the stream's changes", |f| f["type"] == "changes")
                .await;
            for row in frame["rows"].as_array().into_iter().flatten() {
                if let Some(id) = row["id"].as_str().filter(|id| ids.iter().any(|i| i == id)) {
                    seen.insert(id.to_string());
                }
            }
            *cursor = frame["cursor"].as_str().map(String::from);
        }
    }

    let first = Bridge::start(&cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&first, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    let writer = {
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut client = None;
            for (i, id) in ids.iter().enumerate() {
                // Retried by id until it commits: a restart may cut any attempt.
                loop {
                    if client.is_none() {
                        if let Ok((c, connection)) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(connection);
                            client = Some(c);
                        }
                    }
                    let sql = format!(
                        "INSERT INTO app.tasks (id, board_id, title) VALUES ('{id}', '{}', 'stream {i}') \
                         ON CONFLICT (id) DO NOTHING",
                        demo::LAUNCH
                    );
                    match &client {
                        Some(c) if c.batch_execute(&sql).await.is_ok() => break,
                        _ => {
                            client = None;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            }
        })
    };
    follow(&mut bob, &ids, &mut seen, &mut cursor, 30).await;
    first.stop().await;
    let second = Bridge::start(&cluster, &db, |c| {
        c.feed_safety_poll = std::time::Duration::from_secs(60)
    })
    .await;
    let mut bob = Ws::connect(&second, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor.clone()}))
        .await;
    follow(&mut bob, &ids, &mut seen, &mut cursor, 60).await;
    cluster.restart();
    follow(&mut bob, &ids, &mut seen, &mut cursor, WRITES).await;
    writer.await.unwrap();
    assert_eq!(seen, ids.iter().cloned().collect());
    second.stop().await;
}

/// A bridge restart: the client reconnects to the new bridge from its last cursor.
#[tokio::test]
async fn a_bridge_restart_loses_nothing() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_restart").await;
    let first = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&first, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    touch(cluster, &db, demo::TASK_ANNOUNCE, "one").await;
    let frame = bob.wait_for("a change", |f| f["type"] == "changes").await;
    let cursor = frame["cursor"].as_str().unwrap().to_string();
    first.stop().await;
    assert_eq!(bob.closed().await, Some(1001));

    touch(cluster, &db, demo::TASK_SIGNUP, "while no bridge runs").await;
    let second = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&second, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor}))
        .await;
    let missed = bob
        .wait_for_row("the change made between bridges", |f| f["op"] == "upsert")
        .await;
    assert_eq!(missed["id"], demo::TASK_SIGNUP);
    second.stop().await;
}

#[tokio::test]
async fn two_bridges_both_deliver_every_change() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_two").await;
    let one = Bridge::start(cluster, &db, |_| {}).await;
    let two = Bridge::start(cluster, &db, |_| {}).await;
    let mut a = Ws::connect(&one, "alice").await;
    let mut b = Ws::connect(&two, "bob").await;
    a.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    b.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    for task in [demo::TASK_ANNOUNCE, demo::TASK_SIGNUP] {
        touch(cluster, &db, task, "seen twice").await;
    }
    for ws in [&mut a, &mut b] {
        let mut ids: Vec<Value> = Vec::new();
        while ids.len() < 2 {
            ids.push(ws.wait_for_row("a change", |f| f["op"] == "upsert").await["id"].clone());
        }
        assert_eq!(ids, [json!(demo::TASK_ANNOUNCE), json!(demo::TASK_SIGNUP)]);
    }
    one.stop().await;
    two.stop().await;
}

/// A TRUNCATE has no rows to send: a client resuming across one is told to resync.
#[tokio::test]
async fn resuming_across_a_truncate_gets_resync() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_truncate").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let comments = format!("comments?task_id={}", demo::TASK_SIGNUP);
    let mut bob = Ws::connect(&bridge, "bob").await;
    let cursor = bob.subscribe(&[&comments]).await;
    drop(bob);
    let admin = cluster.connect("postgres", &db).await;
    admin.batch_execute("TRUNCATE app.comments").await.unwrap();
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [comments], "cursor": cursor}))
        .await;
    let resync = bob.wait_for("resync", |f| f["type"] == "resync").await;
    assert_eq!(resync["reason"], "truncate");
    assert_eq!(resync["keys"], json!([comments]));
    bridge.stop().await;
}

/// A crash that loses the newest tick (ticks commit asynchronously) and hands its id to
/// another snapshot: the bridge finds its position changed when it reconnects, and every
/// subscriber resyncs instead of resuming from the wrong place.
#[tokio::test]
async fn a_lost_tick_makes_subscribers_resync() {
    let cluster = Cluster::private("lost_tick");
    let db = cluster.database("lost_tick").await;
    let bridge = Bridge::start(&cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    touch(&cluster, &db, demo::TASK_ANNOUNCE, "before the crash").await;
    bob.wait_for_row("the change", |f| f["op"] == "upsert")
        .await;
    // What a crash that lost the last tick's commit leaves: the same id, another snapshot.
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute(
            "BEGIN;
             CREATE TEMP TABLE newest AS SELECT max(id) AS id FROM rowsync.ticks;
             DELETE FROM rowsync.ticks WHERE id = (SELECT id FROM newest);
             INSERT INTO rowsync.ticks (id, snap) OVERRIDING SYSTEM VALUE
                 SELECT id, pg_current_snapshot() FROM newest;
             COMMIT;",
        )
        .await
        .unwrap();
    cluster.restart();
    let resync = bob
        .wait_for("resync after the restart", |f| f["type"] == "resync")
        .await;
    assert_eq!(resync["reason"], "feed_reset");
    assert_eq!(resync["keys"], json!([scope()]));
    touch(&cluster, &db, demo::TASK_SIGNUP, "after the crash").await;
    bob.wait_for_row("live changes again", |f| {
        f["op"] == "upsert" && f["id"] == demo::TASK_SIGNUP
    })
    .await;
    bridge.stop().await;
}

/// rowsync.reset_feed() (after a logical restore): the running bridge resyncs its
/// subscribers and goes on, and tokens issued before it are foreign.
#[tokio::test]
async fn reset_feed_resyncs_and_old_tokens_are_foreign() {
    let cluster = Cluster::shared();
    let db = cluster.database("reset_feed").await;
    let bridge = Bridge::start(cluster, &db, |_| {}).await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let old = bob.subscribe(&[&scope()]).await;
    let admin = cluster.connect("postgres", &db).await;
    admin
        .batch_execute("SELECT rowsync.reset_feed()")
        .await
        .unwrap();
    let resync = bob.wait_for("resync", |f| f["type"] == "resync").await;
    assert_eq!(resync["reason"], "cursor_gone");
    touch(cluster, &db, demo::TASK_SIGNUP, "after the reset").await;
    bob.wait_for_row("live changes again", |f| {
        f["op"] == "upsert" && f["id"] == demo::TASK_SIGNUP
    })
    .await;
    let mut again = Ws::connect(&bridge, "bob").await;
    again
        .request(json!({"type": "subscribe", "keys": [scope()], "cursor": old}))
        .await;
    let resync = again.wait_for("resync", |f| f["type"] == "resync").await;
    assert_eq!(resync["reason"], "cursor_foreign");
    bridge.stop().await;
}

/// A writer that begins while the bridge is awake (so its first writes skip NOTIFY) and
/// commits after the bridge fell asleep still wakes it: writers decide at commit. With
/// the safety poll at a minute, only that wake-up can deliver the change in time. The
/// writer stays open, and the bridge falls asleep all the same: it waits for running
/// transactions only a moment (250 ms), after `feed_idle` (250 ms) without changes.
#[tokio::test]
async fn a_writer_that_saw_the_bridge_awake_still_wakes_it() {
    let cluster = Cluster::shared();
    let db = cluster.database("bridge_wake").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.feed_safety_poll = std::time::Duration::from_secs(60)
    })
    .await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    bob.request(json!({"type": "subscribe", "keys": [scope()]}))
        .await;
    let admin = cluster.connect("postgres", &db).await;
    let sleepers = || async {
        rowsync_tests::scalar::<i64>(&admin, "SELECT last_value FROM rowsync.sleepers", &[]).await
    };
    touch(cluster, &db, demo::TASK_ANNOUNCE, "wakes the bridge").await;
    bob.wait_for_row("the first change", |f| f["op"] == "upsert")
        .await;
    let writer = cluster.connect("postgres", &db).await;
    writer
        .batch_execute(&format!(
            "BEGIN; UPDATE app.tasks SET title = 'begun while awake' WHERE id = '{}'",
            demo::TASK_SIGNUP
        ))
        .await
        .unwrap();
    let begun = std::time::Instant::now();
    rowsync_tests::eventually("the bridge to fall asleep", || async {
        (sleepers().await == 1).then_some(())
    })
    .await;
    assert!(
        begun.elapsed() < std::time::Duration::from_secs(5),
        "asleep only after {:?}: the open writer held the bridge awake",
        begun.elapsed()
    );
    writer.batch_execute("COMMIT").await.unwrap();
    bob.wait_for_row("the change, woken by the commit", |f| {
        f["op"] == "upsert" && f["id"] == demo::TASK_SIGNUP
    })
    .await;
    bridge.stop().await;
}

/// A token far behind costs at most `max_catch_up` rows of the log: past them the
/// subscription resyncs instead of reading on.
#[tokio::test]
async fn catch_up_stops_at_its_limit() {
    let cluster = Cluster::shared();
    let db = cluster.database("catch_up_limit").await;
    let bridge = Bridge::start(cluster, &db, |c| {
        c.max_catch_up = 5;
        c.feed_batch = 2;
    })
    .await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let cursor = bob.subscribe(&[&scope()]).await;
    drop(bob);
    for i in 0..8 {
        touch(cluster, &db, demo::TASK_ANNOUNCE, &format!("edit {i}")).await;
    }
    let mut watcher = Ws::connect(&bridge, "alice").await;
    watcher
        .request(json!({"type": "subscribe", "keys": [format!("tasks:{}", demo::TASK_SIGNUP)]}))
        .await;
    // Committed after the edits: once it is routed, so are they.
    touch(cluster, &db, demo::TASK_SIGNUP, "after").await;
    watcher
        .wait_for_row("the bridge's feed past the edits", |f| {
            f["op"] == "upsert" && f["id"] == demo::TASK_SIGNUP
        })
        .await;
    let mut bob = Ws::connect(&bridge, "bob").await;
    let ack = bob
        .request(json!({"type": "subscribe", "keys": [scope()], "cursor": cursor}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let resync = bob.wait_for("resync", |f| f["type"] == "resync").await;
    assert_eq!(resync["reason"], "too_far_behind");
    bridge.stop().await;
}
