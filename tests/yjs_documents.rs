//! Collaborative documents end to end: tests/yjs/documents.test.mjs drives the real npm
//! `yjs` and `y-websocket` clients against two bridges on one database, here, while the
//! bridges compact the documents every 100 ms.

use rowsync_tests::bridge::{token, Bridge};
use rowsync_tests::{scalar, Cluster};
use serde_json::json;
use std::path::Path;

/// A small message limit, so that the oversized-frame test sends 64 KiB, not 8 MiB.
const MAX_MESSAGE: usize = 64 * 1024;

#[tokio::test]
async fn yjs_clients_against_two_bridges() {
    let cluster = Cluster::shared();
    let db = cluster.database("yjs").await;
    let tweak = |c: &mut rowsync_bridge::Config| {
        c.yjs_max_message_bytes = MAX_MESSAGE;
        c.yjs_flush = std::time::Duration::from_millis(20);
        // Compaction all the time, under every test's edits: nothing may be lost to it.
        c.doc_compact_interval = std::time::Duration::from_millis(100);
    };
    cluster
        .connect("postgres", &db)
        .await
        .batch_execute(
            "UPDATE rowsync.settings SET doc_compact_updates = 3, doc_update_min_age = '0'",
        )
        .await
        .unwrap();
    let a = Bridge::start(cluster, &db, tweak).await;
    let b = Bridge::start(cluster, &db, tweak).await;
    let admin = cluster.connect("postgres", &db).await;
    let membership: String = scalar(
        &admin,
        "SELECT id::text FROM app.board_members WHERE user_id = 'carol' AND board_id = $1::text::uuid",
        &[&rowsync_tests::demo::LAUNCH],
    )
    .await;
    let tokens = json!({
        "alice": token("alice", 3600),
        "bob": token("bob", 3600),
        "carol": token("carol", 3600),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("yjs/documents.test.mjs");
    let run = tokio::process::Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "--test-timeout=30000",
        ])
        .arg(script)
        .env(
            "ROWSYNC_YJS_BRIDGES",
            json!([
                format!("ws://{}/v1/yjs", a.addr),
                format!("ws://{}/v1/yjs", b.addr)
            ])
            .to_string(),
        )
        .env(
            "ROWSYNC_HTTP",
            json!([format!("http://{}", a.addr), format!("http://{}", b.addr)]).to_string(),
        )
        .env("ROWSYNC_TOKENS", tokens.to_string())
        // For a token that expires during its test, minted when that test starts.
        .env("ROWSYNC_JWT_SECRET", rowsync_tests::bridge::JWT_SECRET)
        .env("ROWSYNC_CAROL_MEMBERSHIP", membership)
        .env("ROWSYNC_YJS_MAX_MESSAGE_BYTES", MAX_MESSAGE.to_string())
        .kill_on_drop(true)
        .output();
    // Every wait in the script has its own timeout; this one catches a hang between them.
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the Yjs tests finish within four minutes")
        .expect("node runs (npm packages of tests/yjs are installed by scripts/setup.sh)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "the Yjs tests failed:\n{report}");
    let compacted: i64 = scalar(
        &admin,
        "SELECT count(*) FROM rowsync.docs WHERE snapshot IS NOT NULL",
        &[],
    )
    .await;
    assert!(compacted > 0, "the bridges compacted documents meanwhile");
    a.stop().await;
    b.stop().await;
}
