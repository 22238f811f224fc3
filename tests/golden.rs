//! Golden SQL files: each `tests/sql/NAME.sql` runs in psql against a fresh database with
//! the example app, and its output must equal `tests/sql/expected/NAME.out`. Set
//! ROWSYNC_BLESS=1 to rewrite the expected files (then read the diff before committing).

use rowsync_tests::{Cluster, PG_BIN};
use std::process::Command;

#[tokio::test]
async fn golden_sql_files() {
    let cluster = Cluster::shared();
    let dir = rowsync_tests::tests_dir().join("sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let bless = std::env::var("ROWSYNC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let db = cluster.database(&format!("golden_{name}")).await;
        // psql writes errors to stderr: one pipe for both keeps them in order.
        let output = Command::new("sh")
            .args(["-c", "exec \"$0\" \"$@\" 2>&1"])
            .arg(format!("{PG_BIN}/psql"))
            .args(["-X", "-a", "-q", "-P", "pager=off"])
            .arg(cluster.url("postgres", &db))
            .arg("-f")
            .arg(file)
            .env("PGTZ", "UTC")
            .output()
            .expect("psql");
        let actual =
            String::from_utf8_lossy(&output.stdout).replace(&format!("{}:", file.display()), "");
        let expected_path = dir.join("expected").join(format!("{name}.out"));
        if bless {
            std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let diff_path = std::env::temp_dir().join(format!("rowsync-{name}.actual"));
            std::fs::write(&diff_path, &actual).unwrap();
            failures.push(format!(
                "{name}: output differs; diff {} {}",
                expected_path.display(),
                diff_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
