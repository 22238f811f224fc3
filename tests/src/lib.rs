//! Support for the end-to-end tests: a real Postgres cluster started for the run (as the
//! `postgres` user when the tests run as root), one database per test with the example
//! app loaded, and connections acting as an app user the way the bridge does.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The tests' folder, read when they run: the build cache may be shared by several
/// checkouts, and a path compiled in would name whichever built it last.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// The example app (sql/demo.sql), read when the tests run, for the same reason.
pub fn demo_sql() -> String {
    std::fs::read_to_string(tests_dir().join("../sql/demo.sql")).expect("sql/demo.sql")
}

/// The example app's ids.
pub mod demo {
    pub const LAUNCH: &str = "00000000-0000-4000-8000-0000000000b1";
    pub const ALICE_NOTES: &str = "00000000-0000-4000-8000-0000000000b2";
    pub const BOB_ERRANDS: &str = "00000000-0000-4000-8000-0000000000b3";
    pub const TASK_ANNOUNCE: &str = "00000000-0000-4000-8000-000000000001";
    pub const TASK_SIGNUP: &str = "00000000-0000-4000-8000-000000000002";
    pub const TASK_VENUE: &str = "00000000-0000-4000-8000-000000000003";
    pub const TASK_SECRET: &str = "00000000-0000-4000-8000-000000000004";
    pub const TASK_MILK: &str = "00000000-0000-4000-8000-000000000005";
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

static DATA_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn stop_cluster() {
    let dir = DATA_DIR.lock().ok().and_then(|d| d.clone());
    if let Some(dir) = dir {
        let _ = cluster_script(&["stop".as_ref(), dir.as_os_str(), "immediate".as_ref()]).output();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// scripts/cluster.sh, the one place a cluster is started and stopped.
fn cluster_script(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(tests_dir().join("../scripts/cluster.sh"))
        .args(args);
    cmd
}

/// What the tests need of Postgres beyond its defaults: speed over durability, room for
/// many connections and prepared transactions.
const TEST_SETTINGS: [&str; 8] = [
    "-c",
    "fsync=off",
    "-c",
    "max_connections=300",
    "-c",
    "max_prepared_transactions=20",
    "-c",
    "shared_buffers=64MB",
];

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    /// The cluster of this test run, started on first use and stopped at exit.
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::start)
    }

    /// A cluster of the test's own, for tests that stop or restart Postgres. Stopped on drop.
    pub fn private(name: &str) -> Cluster {
        Cluster::start_in(
            std::env::temp_dir().join(format!("rowsync-test-{}-{name}", std::process::id())),
        )
    }

    /// Restarts Postgres on the same port (fast shutdown: connections are cut).
    pub fn restart(&self) {
        run(
            cluster_script(&["stop".as_ref(), self.dir.as_os_str(), "fast".as_ref()]),
            "stop the cluster",
        );
        self.start_postgres(&self.port.to_string());
    }

    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("rowsync-test-{}", std::process::id()));
        *DATA_DIR.lock().expect("data dir lock") = Some(dir.clone());
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(stop_cluster) };
        Cluster::start_in(dir)
    }

    fn start_in(dir: PathBuf) -> Cluster {
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Cluster { dir, port: 0 };
        cluster.port = cluster.start_postgres("");
        cluster
    }

    /// Starts the cluster (made on first start) on `port`, or a free one when empty.
    fn start_postgres(&self, port: &str) -> u16 {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["start".as_ref(), self.dir.as_os_str(), port.as_ref()];
        args.extend(TEST_SETTINGS.iter().map(std::ffi::OsStr::new));
        run(cluster_script(&args), "start the cluster")
            .parse()
            .expect("the cluster's port")
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port)
    }

    pub async fn connect(&self, user: &str, db: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url(user, db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect as {user} to {db}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// A connection whose notifications arrive on the returned channel.
    pub async fn listen(&self, db: &str) -> (Client, mpsc::UnboundedReceiver<Notification>) {
        let (client, mut connection) = tokio_postgres::connect(&self.url("postgres", db), NoTls)
            .await
            .expect("listen connection");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let Ok(AsyncMessage::Notification(n)) = message {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        });
        client
            .batch_execute("LISTEN rowsync")
            .await
            .expect("LISTEN");
        (client, rx)
    }

    /// A new database with the extension and the example app loaded.
    pub async fn database(&self, prefix: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}_{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let admin = self.connect("postgres", "postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let db = self.connect("postgres", &name).await;
        // Roles are cluster-wide: databases created at once must not race to create them.
        static DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = DEMO.lock().await;
        db.batch_execute(&demo_sql())
            .await
            .expect("load sql/demo.sql");
        name
    }
}

/// An UPDATE of a demo task's title: one change in the feed.
pub fn touch(task: &str) -> String {
    format!("UPDATE app.tasks SET title = title || '!' WHERE id = '{task}'")
}

/// Transactions left open the ways that held v0.1's feed back: a write on a table that is
/// not synced, a write on a synced one (a change to `demo::TASK_MILK`), a session holding
/// an xid in another database, and a prepared transaction (a change to
/// `demo::TASK_SECRET`).
pub struct OpenTransactions {
    unsynced: Client,
    synced: Client,
    elsewhere: Client,
    prepared: Client,
    gid: String,
}

impl OpenTransactions {
    pub async fn begin(cluster: &Cluster, db: &str, other_db: &str) -> OpenTransactions {
        let session = |sql: String, db: &str| {
            let db = db.to_string();
            async move {
                let client = cluster.connect("postgres", &db).await;
                client.batch_execute(&sql).await.expect(&sql);
                client
            }
        };
        let gid = format!("held_{db}");
        OpenTransactions {
            unsynced: session(
                "BEGIN; CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)".into(),
                db,
            )
            .await,
            synced: session(format!("BEGIN; {}", touch(demo::TASK_MILK)), db).await,
            elsewhere: session("BEGIN; SELECT pg_current_xact_id()".into(), other_db).await,
            prepared: session(
                format!(
                    "BEGIN; {}; PREPARE TRANSACTION '{gid}'",
                    touch(demo::TASK_SECRET)
                ),
                db,
            )
            .await,
            gid,
        }
    }

    /// Ends them: the two with changes commit or roll back, the others roll back.
    pub async fn end(self, commit: bool) {
        let (synced, prepared) = if commit {
            (
                "COMMIT".to_string(),
                format!("COMMIT PREPARED '{}'", self.gid),
            )
        } else {
            (
                "ROLLBACK".to_string(),
                format!("ROLLBACK PREPARED '{}'", self.gid),
            )
        };
        self.synced.batch_execute(&synced).await.unwrap();
        self.prepared.batch_execute(&prepared).await.unwrap();
        for session in [&self.unsynced, &self.elsewhere] {
            session.batch_execute("ROLLBACK").await.unwrap();
        }
    }
}

/// The first column of the one row `sql` returns.
pub async fn scalar<T: tokio_postgres::types::FromSqlOwned>(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T {
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Connects as the bridge does: as the authenticator.
pub async fn authenticator(db: &str) -> Client {
    Cluster::shared().connect("rowsync_authenticator", db).await
}

/// Runs `sql` with `arg` in one transaction as app user `sub`, the bridge's way.
/// A transaction as app user `sub`, opened the way the bridge opens one.
pub async fn app_user_tx<'a>(
    client: &'a mut Client,
    sub: &str,
) -> Result<tokio_postgres::Transaction<'a>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let claims = serde_json::json!({ "sub": sub, "role": "app_user" }).to_string();
    tx.execute(
        "SELECT set_config('role', 'app_user', true), set_config('request.jwt.claims', $1, true)",
        &[&claims],
    )
    .await?;
    Ok(tx)
}

pub async fn as_user(
    client: &mut Client,
    sub: &str,
    sql: &str,
    arg: &Value,
) -> Result<Value, tokio_postgres::Error> {
    let tx = app_user_tx(client, sub).await?;
    let row = tx.query_one(sql, &[arg]).await?;
    let value: Value = row.get(0);
    tx.commit().await?;
    Ok(value)
}

/// `rowsync.apply(tx)` as app user `sub`, committed.
pub async fn apply_as(
    client: &mut Client,
    sub: &str,
    tx: Value,
) -> Result<Value, tokio_postgres::Error> {
    as_user(client, sub, "SELECT rowsync.apply($1)", &tx).await
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a database error: {error}"))
}

/// Polls `check` until it returns `Some`, for at most ten seconds: tests wait for what
/// must happen (a bridge's next poll, a notification), they never assume it happened.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ =
            cluster_script(&["stop".as_ref(), self.dir.as_os_str(), "immediate".as_ref()]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub mod bridge;
