//! The bridge's configuration: one typed struct, read from an optional TOML file
//! (`--config FILE` or ROWSYNC_CONFIG) and then the environment, where every key `name`
//! is `ROWSYNC_NAME`. docs/configuration.md lists every key; `--check-config` validates.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A value that never appears in logs or `--check-config` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(unset)")
        } else {
            f.write_str("(secret)")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Connection string of the authenticator role (NOINHERIT, granted the app roles).
    pub database_url: Secret,
    pub pool_size: usize,
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    pub jwt_secret: Secret,
    /// RS256/ES256 public key, PEM.
    pub jwt_public_key: String,
    pub jwt_audience: Option<String>,
    /// The role for tokens without a `role` claim.
    pub default_role: String,
    /// The role of connections without a token; unset: a token is required.
    pub anon_role: Option<String>,
    /// Origins allowed to open WebSockets and call the HTTP API from a browser; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// A folder served at `/` (the demo app).
    pub static_dir: Option<PathBuf>,
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub max_rooms: usize,
    pub max_fetch_keys: usize,
    pub max_presence_state_bytes: usize,
    pub messages_per_second: u32,
    pub send_queue_frames: usize,
    pub write_timeout: Duration,
    pub heartbeat: Duration,
    pub client_timeout: Duration,
    pub reauthorize: Duration,
    pub presence_timeout: Duration,
    pub feed_poll: Duration,
    pub feed_idle: Duration,
    pub feed_safety_poll: Duration,
    pub feed_batch: i32,
    pub max_catch_up: usize,
    /// Most rows a scope's `fetch` returns and a resume's `members` lists.
    pub max_scope_rows: usize,
    /// Identities checked per visibility statement, and statements run at once.
    pub visibility_batch: usize,
    pub visibility_parallel: usize,
    pub visibility_timeout: Duration,
    pub prune_interval: Duration,
    pub bus_flush: Duration,
    pub bus_max_bytes: usize,
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            database_url: Secret::default(),
            pool_size: 16,
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: Secret::default(),
            jwt_public_key: String::new(),
            jwt_audience: None,
            default_role: "app_user".into(),
            anon_role: None,
            allowed_origins: Vec::new(),
            static_dir: None,
            max_frame_bytes: 64 * 1024,
            max_subscriptions: 1000,
            max_rooms: 32,
            max_fetch_keys: 500,
            max_presence_state_bytes: 1024,
            messages_per_second: 50,
            send_queue_frames: 1024,
            write_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(25),
            client_timeout: Duration::from_secs(60),
            reauthorize: Duration::from_secs(30),
            presence_timeout: Duration::from_secs(30),
            feed_poll: Duration::from_millis(2),
            feed_idle: Duration::from_millis(250),
            feed_safety_poll: Duration::from_secs(5),
            feed_batch: 1000,
            max_catch_up: 100_000,
            max_scope_rows: 1000,
            visibility_batch: 100,
            visibility_parallel: 2,
            visibility_timeout: Duration::from_secs(2),
            prune_interval: Duration::from_secs(60),
            bus_flush: Duration::from_millis(50),
            bus_max_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Every key, in the order docs/configuration.md gives them.
pub const KEYS: &[&str] = &[
    "listen",
    "database_url",
    "pool_size",
    "jwt_algorithm",
    "jwt_secret",
    "jwt_public_key",
    "jwt_audience",
    "default_role",
    "anon_role",
    "allowed_origins",
    "static_dir",
    "max_frame_bytes",
    "max_subscriptions",
    "max_rooms",
    "max_fetch_keys",
    "max_presence_state_bytes",
    "messages_per_second",
    "send_queue_frames",
    "write_timeout_ms",
    "heartbeat_ms",
    "client_timeout_ms",
    "reauthorize_ms",
    "presence_timeout_ms",
    "feed_poll_ms",
    "feed_idle_ms",
    "feed_safety_poll_ms",
    "feed_batch",
    "max_catch_up",
    "max_scope_rows",
    "visibility_batch",
    "visibility_parallel",
    "visibility_timeout_ms",
    "prune_interval_ms",
    "bus_flush_ms",
    "bus_max_bytes",
    "shutdown_grace_ms",
];

impl Config {
    /// The file (if any), then `ROWSYNC_*` variables from `env`.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            for (key, value) in table {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                config
                    .set(&key, &text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("ROWSYNC_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key == "config" || key == "log" {
                continue;
            }
            config
                .set(&key, &value)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        config.validate()?;
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("not a number: {value:?}"))
        }
        fn ms(value: &str) -> Result<Duration, String> {
            num::<u64>(value).map(Duration::from_millis)
        }
        let optional = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        match key {
            "listen" => {
                self.listen = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("not an address: {value:?}"))?
            }
            "database_url" => self.database_url = Secret(value.to_string()),
            "pool_size" => self.pool_size = num(value)?,
            "jwt_algorithm" => {
                self.jwt_algorithm = match value.trim().to_ascii_uppercase().as_str() {
                    "HS256" => JwtAlgorithm::Hs256,
                    "RS256" => JwtAlgorithm::Rs256,
                    "ES256" => JwtAlgorithm::Es256,
                    _ => return Err(format!("{value:?}: use HS256, RS256 or ES256")),
                }
            }
            "jwt_secret" => self.jwt_secret = Secret(value.to_string()),
            "jwt_public_key" => self.jwt_public_key = value.to_string(),
            "jwt_audience" => self.jwt_audience = optional(value),
            "default_role" => self.default_role = value.trim().to_string(),
            "anon_role" => self.anon_role = optional(value),
            "allowed_origins" => {
                self.allowed_origins = value
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect()
            }
            "static_dir" => self.static_dir = optional(value).map(PathBuf::from),
            "max_frame_bytes" => self.max_frame_bytes = num(value)?,
            "max_subscriptions" => self.max_subscriptions = num(value)?,
            "max_rooms" => self.max_rooms = num(value)?,
            "max_fetch_keys" => self.max_fetch_keys = num(value)?,
            "max_presence_state_bytes" => self.max_presence_state_bytes = num(value)?,
            "messages_per_second" => self.messages_per_second = num(value)?,
            "send_queue_frames" => self.send_queue_frames = num(value)?,
            "heartbeat_ms" => self.heartbeat = ms(value)?,
            "client_timeout_ms" => self.client_timeout = ms(value)?,
            "write_timeout_ms" => self.write_timeout = ms(value)?,
            "reauthorize_ms" => self.reauthorize = ms(value)?,
            "presence_timeout_ms" => self.presence_timeout = ms(value)?,
            "feed_poll_ms" => self.feed_poll = ms(value)?,
            "feed_idle_ms" => self.feed_idle = ms(value)?,
            "feed_safety_poll_ms" => self.feed_safety_poll = ms(value)?,
            "feed_batch" => self.feed_batch = num(value)?,
            "max_catch_up" => self.max_catch_up = num(value)?,
            "max_scope_rows" => self.max_scope_rows = num(value)?,
            "visibility_batch" => self.visibility_batch = num(value)?,
            "visibility_parallel" => self.visibility_parallel = num(value)?,
            "visibility_timeout_ms" => self.visibility_timeout = ms(value)?,
            "prune_interval_ms" => self.prune_interval = ms(value)?,
            "bus_flush_ms" => self.bus_flush = ms(value)?,
            "bus_max_bytes" => self.bus_max_bytes = num(value)?,
            "shutdown_grace_ms" => self.shutdown_grace = ms(value)?,
            _ => return Err(format!("unknown key {key:?} (see docs/configuration.md)")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        if self.database_url.0.is_empty() {
            return Err("database_url is required (ROWSYNC_DATABASE_URL)".into());
        }
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 if self.jwt_secret.0.len() < 32 => {
                return Err("jwt_secret must be at least 32 bytes for HS256".into())
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 if !self.jwt_public_key.contains("BEGIN") => {
                return Err("jwt_public_key must be a PEM public key for RS256/ES256".into())
            }
            _ => {}
        }
        let positive = [
            ("pool_size", self.pool_size),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_subscriptions", self.max_subscriptions),
            ("max_rooms", self.max_rooms),
            ("max_fetch_keys", self.max_fetch_keys),
            ("max_presence_state_bytes", self.max_presence_state_bytes),
            ("send_queue_frames", self.send_queue_frames),
            ("messages_per_second", self.messages_per_second as usize),
            ("feed_batch", self.feed_batch.max(0) as usize),
            ("max_catch_up", self.max_catch_up),
            ("max_scope_rows", self.max_scope_rows),
            ("visibility_batch", self.visibility_batch),
            ("visibility_parallel", self.visibility_parallel),
            ("bus_max_bytes", self.bus_max_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        let durations = [
            ("heartbeat_ms", self.heartbeat),
            ("client_timeout_ms", self.client_timeout),
            ("reauthorize_ms", self.reauthorize),
            ("write_timeout_ms", self.write_timeout),
            ("presence_timeout_ms", self.presence_timeout),
            ("feed_poll_ms", self.feed_poll),
            ("feed_safety_poll_ms", self.feed_safety_poll),
            ("bus_flush_ms", self.bus_flush),
            ("visibility_timeout_ms", self.visibility_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be positive"));
        }
        if self.client_timeout <= self.heartbeat {
            return Err("client_timeout_ms must be longer than heartbeat_ms".into());
        }
        if self.bus_max_bytes > 16 << 20 {
            return Err("bus_max_bytes is at most 16777216 (one bus row per flush)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("rowsync-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bridge.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\nmax_rooms = 4\nallowed_origins = [\"https://a.example\", \"https://b.example/\"]\n").unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("ROWSYNC_DATABASE_URL", "host=x"),
                ("ROWSYNC_JWT_SECRET", SECRET),
                ("ROWSYNC_MAX_ROOMS", "7"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_rooms, 7);
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(format!("{:?}", config.jwt_secret), "(secret)");
    }

    #[test]
    fn refuses_unknown_keys_bad_numbers_and_weak_secrets() {
        let base = [
            ("ROWSYNC_DATABASE_URL", "host=x"),
            ("ROWSYNC_JWT_SECRET", SECRET),
        ];
        let with = |extra: (&str, &str)| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            Config::load(None, env(&pairs))
        };
        assert!(with(("ROWSYNC_MAX_FRAM_BYTES", "1"))
            .unwrap_err()
            .contains("unknown key"));
        assert!(with(("ROWSYNC_MAX_ROOMS", "many"))
            .unwrap_err()
            .contains("not a number"));
        assert!(with(("ROWSYNC_MAX_ROOMS", "0"))
            .unwrap_err()
            .contains("positive"));
        assert!(with(("ROWSYNC_JWT_SECRET", "short"))
            .unwrap_err()
            .contains("32 bytes"));
        assert!(Config::load(None, env(&[("ROWSYNC_JWT_SECRET", SECRET)]))
            .unwrap_err()
            .contains("database_url"));
        assert!(with(("ROWSYNC_JWT_ALGORITHM", "RS256"))
            .unwrap_err()
            .contains("PEM"));
    }
}
