//! Collaborative documents end to end: tests/yjs/documents.test.mjs drives the real npm
//! `yjs` and `y-websocket` clients against bridges on one database, here, while the
//! bridges compact the documents every 100 ms. A third bridge never stores edits on its
//! own (its flush interval is an hour): the script restarts it, as a crash would end it,
//! and restarts Postgres, through a small control server.

use rowsync_bridge::Config;
use rowsync_tests::bridge::{token, Bridge};
use rowsync_tests::{scalar, Cluster};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// A small message limit, so that the oversized-frame test sends 64 KiB, not 8 MiB.
const MAX_MESSAGE: usize = 64 * 1024;

fn fast(c: &mut Config) {
    c.yjs_max_message_bytes = MAX_MESSAGE;
    c.yjs_flush = Duration::from_millis(20);
    // Compaction all the time, under every test's edits: nothing may be lost to it.
    c.doc_compact_interval = Duration::from_millis(100);
}

/// What the script may ask for: `POST /restart-bridge` (the third bridge stops, its
/// unstored edits with it, and a fresh one takes its address), `POST /restart-postgres`,
/// and `POST /doc-max-bytes/<task>/<margin>` (every description's `max_bytes` becomes
/// that task's stored size plus the margin; a margin of `default` puts it back).
async fn control(
    cluster: Arc<Cluster>,
    db: String,
    crashing: Arc<Mutex<Option<Bridge>>>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = vec![0; 1024];
            let n = socket.read(&mut request).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if line.starts_with("POST /restart-bridge") {
                let mut slot = crashing.lock().await;
                if let Some(old) = slot.take() {
                    let at = old.addr;
                    old.stop().await;
                    *slot = Some(Bridge::start_at(&cluster, &db, at, fast).await);
                }
            } else if let Some(rest) = line.strip_prefix("POST /doc-max-bytes/") {
                let mut parts = rest.split_whitespace().next().unwrap_or("").split('/');
                let (task, margin) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let admin = cluster.connect("postgres", &db).await;
                let sql = match margin.parse::<i64>() {
                    Ok(margin) => format!(
                        "UPDATE rowsync.doc_columns SET max_bytes = coalesce((SELECT snapshot_bytes + tail_bytes \
                         FROM rowsync.docs WHERE row_id = '{}'), 0) + {margin}",
                        task.replace('\'', "")
                    ),
                    Err(_) => "UPDATE rowsync.doc_columns SET max_bytes = DEFAULT".to_string(),
                };
                admin.batch_execute(&sql).await.unwrap();
            } else if line.starts_with("POST /restart-postgres") {
                let cluster = cluster.clone();
                tokio::task::spawn_blocking(move || cluster.restart())
                    .await
                    .unwrap();
            }
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    addr
}

#[tokio::test]
async fn yjs_clients_against_bridges() {
    // Its own cluster: the script restarts Postgres.
    let cluster = Arc::new(Cluster::private("yjs"));
    let db = cluster.database("yjs").await;
    cluster
        .connect("postgres", &db)
        .await
        .batch_execute(
            "UPDATE rowsync.settings SET doc_compact_updates = 3, doc_update_min_age = '0'",
        )
        .await
        .unwrap();
    let a = Bridge::start(&cluster, &db, fast).await;
    let b = Bridge::start(&cluster, &db, fast).await;
    let crashing = Bridge::start(&cluster, &db, |c| {
        fast(c);
        c.yjs_flush = Duration::from_secs(3600);
    })
    .await;
    let c_addr = crashing.addr;
    let crashing = Arc::new(Mutex::new(Some(crashing)));
    let control_addr = control(cluster.clone(), db.clone(), crashing.clone()).await;
    let admin = cluster.connect("postgres", &db).await;
    let membership: String = scalar(
        &admin,
        "SELECT id::text FROM app.board_members WHERE user_id = 'carol' AND board_id = $1::text::uuid",
        &[&rowsync_tests::demo::LAUNCH],
    )
    .await;
    let tokens = json!({"alice": token("alice", 3600), "bob": token("bob", 3600), "carol": token("carol", 3600)});
    let script = rowsync_tests::tests_dir().join("yjs/documents.test.mjs");
    let run = tokio::process::Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "--test-timeout=60000",
        ])
        .arg(script)
        .env(
            "ROWSYNC_YJS_BRIDGES",
            json!([
                format!("ws://{}/v1/yjs", a.addr),
                format!("ws://{}/v1/yjs", b.addr),
                format!("ws://{c_addr}/v1/yjs")
            ])
            .to_string(),
        )
        .env(
            "ROWSYNC_HTTP",
            json!([format!("http://{}", a.addr), format!("http://{}", b.addr)]).to_string(),
        )
        .env("ROWSYNC_CONTROL", format!("http://{control_addr}"))
        .env("ROWSYNC_TOKENS", tokens.to_string())
        // For a token that expires during its test, minted when that test starts.
        .env("ROWSYNC_JWT_SECRET", rowsync_tests::bridge::JWT_SECRET)
        .env("ROWSYNC_CAROL_MEMBERSHIP", membership)
        .env("ROWSYNC_YJS_MAX_MESSAGE_BYTES", MAX_MESSAGE.to_string())
        .kill_on_drop(true)
        .output();
    // Every wait in the script has its own timeout; this one catches a hang between them.
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Yjs tests finish within five minutes")
        .expect("node runs (npm packages of tests/yjs are installed by scripts/setup.sh)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "the Yjs tests failed:\n{report}");
    let admin = cluster.connect("postgres", &db).await;
    let compacted: i64 = scalar(
        &admin,
        "SELECT count(*) FROM rowsync.docs WHERE snapshot IS NOT NULL",
        &[],
    )
    .await;
    assert!(compacted > 0, "the bridges compacted documents meanwhile");
    a.stop().await;
    b.stop().await;
    let third = crashing.lock().await.take();
    if let Some(c) = third {
        c.stop().await;
    }
}
