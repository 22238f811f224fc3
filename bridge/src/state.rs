//! What every part of the bridge shares: configuration, the database pool, token
//! verification, who follows what, presence, metrics, and where the feed stands.

use crate::auth::Verifier;
use crate::config::Config;
use crate::cursor::Cursor;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::router::Router;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio_postgres::NoTls;

pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    pub verifier: Verifier,
    pub router: Router,
    pub presence: Presence,
    pub metrics: Metrics,
    /// Where the feed stands: every change up to its tick has been routed.
    pub cursor: Cursor,
    pub feed_ready: AtomicBool,
    /// Bumped when a batch changed an access table: every connection checks its keys.
    pub access_changed: watch::Sender<u64>,
    pub shutdown: watch::Receiver<bool>,
    /// One clone per open connection; its count tells shutdown when all are gone.
    pub connections: Arc<()>,
    pub started: Instant,
    /// The collaborative documents open here.
    pub docs: crate::yjs::Hub,
    /// Names this bridge: document edits it appended carry it, so it does not relay them
    /// twice when the feed brings them back.
    pub bridge_id: String,
}

impl AppState {
    pub fn new(config: Config, shutdown: watch::Receiver<bool>) -> Result<AppState, String> {
        let pg: tokio_postgres::Config = config
            .database_url
            .0
            .parse()
            .map_err(|e| format!("database_url: {e}"))?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .build()
            .map_err(|e| format!("database pool: {e}"))?;
        let bridge = format!(
            "{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        );
        let bridge = bridge_id(&bridge);
        Ok(AppState {
            verifier: Verifier::new(&config)?,
            bridge_id: bridge.clone(),
            docs: crate::yjs::Hub::default(),
            presence: Presence::new(bridge, config.presence_timeout, config.bus_max_bytes),
            pool,
            router: Router::default(),
            metrics: Metrics::default(),
            cursor: Cursor::default(),
            feed_ready: AtomicBool::new(false),
            access_changed: watch::Sender::new(0),
            shutdown,
            connections: Arc::new(()),
            started: Instant::now(),
            config,
        })
    }
}

fn bridge_id(seed: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{seed}-{nanos:x}")
}
