//! The React board (examples/react-board, built by the test command with Vite) and the
//! client in Debian's Chromium, driven by examples/react-board/e2e (node's test runner
//! speaking the DevTools protocol): two users on a real bridge and Postgres. Screenshots go
//! to `$CARGO_TARGET_TMPDIR/screenshots`.

use rowsync_tests::bridge::{token, Bridge};
use rowsync_tests::Cluster;
use serde_json::json;
use std::path::Path;

#[tokio::test]
async fn the_demo_in_chromium() {
    let root = rowsync_tests::tests_dir().join("..");
    let cluster = Cluster::shared();
    let db = cluster.database("browser").await;
    let board = root.join("examples/react-board");
    let dist = board.join("dist");
    assert!(
        dist.join("demo/index.html").exists(),
        "build the board first: (cd examples/react-board && npm run build), as scripts/test.sh does"
    );
    // The offline test serves the board from an origin of its own, which it then stops.
    let origin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bridge = Bridge::start(cluster, &db, |c| {
        c.static_dir = Some(dist.clone());
        c.allowed_origins = vec![format!("http://127.0.0.1:{origin_port}")];
    })
    .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let tokens = json!({"alice": token("alice", 3600), "bob": token("bob", 3600), "carol": token("carol", 3600)});
    let output = tokio::process::Command::new("node")
        .args(["--experimental-websocket", "--test", "--test-reporter=spec"])
        .arg(board.join("e2e/board.test.mjs"))
        .env("ROWSYNC_BOARD_DIST", &dist)
        .env("ROWSYNC_ORIGIN_PORT", origin_port.to_string())
        .env("ROWSYNC_BRIDGE", format!("http://{}", bridge.addr))
        .env("ROWSYNC_TOKENS", tokens.to_string())
        .env("ROWSYNC_SCREENSHOTS", &shots)
        .output()
        .await
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}\nscreenshots: {}", shots.display());
    assert!(output.status.success(), "browser tests failed:\n{report}");
    bridge.stop().await;
}
