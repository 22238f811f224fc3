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

/// Whether a setting must not be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Positive,
    Unchecked,
}

/// One setting as the table below declares it: its key (environment variable
/// `ROWSYNC_<KEY>`), its default as docs/configuration.md shows it, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub shown_default: &'static str,
    pub limit: Limit,
}

/// Zero, for the settings that must not be.
trait Zero {
    fn is_zero(&self) -> bool;
}

macro_rules! zero_for {
    ($($t:ty),*) => { $(impl Zero for $t { fn is_zero(&self) -> bool { *self == 0 } })* };
}
zero_for!(usize, u32, i32);

impl Zero for Duration {
    fn is_zero(&self) -> bool {
        Duration::is_zero(self)
    }
}

/// Checks a setting declared `Positive`; nothing for `Unchecked` ones.
macro_rules! zero_check {
    (Positive, $value:expr, $key:literal) => {
        if Zero::is_zero($value) {
            return Some($key);
        }
    };
    (Unchecked, $value:expr, $key:literal) => {};
}

/// The one table of settings: the struct, its defaults, parsing each key, the limits and
/// the list docs/configuration.md is checked against all come from it.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr, $key:literal, $shown:literal, $parse:expr, $limit:ident;
    )*) => {
        #[derive(Debug, Clone)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        impl Default for Config {
            fn default() -> Config {
                Config { $($field: $default,)* }
            }
        }

        /// Every setting, in the order docs/configuration.md gives them.
        pub const SETTINGS: &[Setting] = &[
            $(Setting { key: $key, shown_default: $shown, limit: Limit::$limit },)*
        ];

        impl Config {
            fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
                match key {
                    $($key => self.$field = ($parse)(value)?,)*
                    _ => return Err(format!("unknown key {key:?} (see docs/configuration.md)")),
                }
                Ok(())
            }

            /// The first setting that must not be zero and is.
            fn zero_where_positive(&self) -> Option<&'static str> {
                $(zero_check!($limit, &self.$field, $key);)*
                None
            }
        }
    };
}

fn num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {value:?}"))
}

fn ms(value: &str) -> Result<Duration, String> {
    num::<u64>(value).map(Duration::from_millis)
}

fn text(value: &str) -> Result<String, String> {
    Ok(value.trim().to_string())
}

fn raw(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret(value.to_string()))
}

fn optional(value: &str) -> Result<Option<String>, String> {
    Ok((!value.trim().is_empty()).then(|| value.trim().to_string()))
}

fn address(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("not an address: {value:?}"))
}

fn algorithm(value: &str) -> Result<JwtAlgorithm, String> {
    match value.trim().to_ascii_uppercase().as_str() {
        "HS256" => Ok(JwtAlgorithm::Hs256),
        "RS256" => Ok(JwtAlgorithm::Rs256),
        "ES256" => Ok(JwtAlgorithm::Es256),
        _ => Err(format!("{value:?}: use HS256, RS256 or ES256")),
    }
}

fn origins(value: &str) -> Result<Vec<String>, String> {
    Ok(value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect())
}

fn folder(value: &str) -> Result<Option<PathBuf>, String> {
    optional(value).map(|v| v.map(PathBuf::from))
}

settings! {
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8787)), "listen", "127.0.0.1:8787", address, Unchecked;
    /// Connection string of the authenticator role (NOINHERIT, granted the app roles).
    database_url: Secret = Secret::default(), "database_url", "none", secret, Unchecked;
    pool_size: usize = 16, "pool_size", "16", num, Positive;
    jwt_algorithm: JwtAlgorithm = JwtAlgorithm::Hs256, "jwt_algorithm", "HS256", algorithm, Unchecked;
    /// HS256 shared secret.
    jwt_secret: Secret = Secret::default(), "jwt_secret", "empty", secret, Unchecked;
    /// RS256/ES256 public key, PEM.
    jwt_public_key: String = String::new(), "jwt_public_key", "empty", raw, Unchecked;
    jwt_audience: Option<String> = None, "jwt_audience", "unset", optional, Unchecked;
    /// The role for tokens without a `role` claim.
    default_role: String = "app_user".into(), "default_role", "app_user", text, Unchecked;
    /// The role of connections without a token; unset: a token is required.
    anon_role: Option<String> = None, "anon_role", "unset", optional, Unchecked;
    /// Origins allowed to open WebSockets and call the HTTP API from a browser; `*` allows any.
    allowed_origins: Vec<String> = Vec::new(), "allowed_origins", "none", origins, Unchecked;
    /// A folder served at `/` (the demo app).
    static_dir: Option<PathBuf> = None, "static_dir", "unset", folder, Unchecked;
    max_frame_bytes: usize = 64 * 1024, "max_frame_bytes", "65536", num, Positive;
    max_subscriptions: usize = 1000, "max_subscriptions", "1000", num, Positive;
    max_rooms: usize = 32, "max_rooms", "32", num, Positive;
    max_fetch_keys: usize = 500, "max_fetch_keys", "500", num, Positive;
    max_presence_state_bytes: usize = 1024, "max_presence_state_bytes", "1024", num, Positive;
    messages_per_second: u32 = 50, "messages_per_second", "50", num, Positive;
    send_queue_frames: usize = 1024, "send_queue_frames", "1024", num, Positive;
    write_timeout: Duration = Duration::from_secs(10), "write_timeout_ms", "10000", ms, Positive;
    heartbeat: Duration = Duration::from_secs(25), "heartbeat_ms", "25000", ms, Positive;
    client_timeout: Duration = Duration::from_secs(60), "client_timeout_ms", "60000", ms, Positive;
    reauthorize: Duration = Duration::from_secs(30), "reauthorize_ms", "30000", ms, Positive;
    presence_timeout: Duration = Duration::from_secs(30), "presence_timeout_ms", "30000", ms, Positive;
    feed_poll: Duration = Duration::from_millis(2), "feed_poll_ms", "2", ms, Positive;
    feed_idle: Duration = Duration::from_millis(250), "feed_idle_ms", "250", ms, Unchecked;
    feed_safety_poll: Duration = Duration::from_secs(5), "feed_safety_poll_ms", "5000", ms, Positive;
    feed_batch: i32 = 1000, "feed_batch", "1000", num, Positive;
    max_catch_up: usize = 100_000, "max_catch_up", "100000", num, Positive;
    /// Most rows a scope's `fetch` returns and a resume's `members` lists.
    max_scope_rows: usize = 1000, "max_scope_rows", "1000", num, Positive;
    /// Identities checked per visibility statement, and statements run at once.
    visibility_batch: usize = 500, "visibility_batch", "500", num, Positive;
    visibility_parallel: usize = 2, "visibility_parallel", "2", num, Positive;
    visibility_timeout: Duration = Duration::from_secs(2), "visibility_timeout_ms", "2000", ms, Positive;
    prune_interval: Duration = Duration::from_secs(60), "prune_interval_ms", "60000", ms, Unchecked;
    bus_flush: Duration = Duration::from_millis(50), "bus_flush_ms", "50", ms, Positive;
    bus_max_bytes: usize = 64 * 1024, "bus_max_bytes", "65536", num, Positive;
    shutdown_grace: Duration = Duration::from_secs(10), "shutdown_grace_ms", "10000", ms, Unchecked;
    /// Largest message on /v1/yjs: a whole document, from a client that was offline, is one.
    yjs_max_message_bytes: usize = 8 << 20, "yjs_max_message_bytes", "8388608", num, Positive;
    yjs_messages_per_second: u32 = 100, "yjs_messages_per_second", "100", num, Positive;
    yjs_max_awareness_bytes: usize = 4096, "yjs_max_awareness_bytes", "4096", num, Positive;
    /// Bytes waiting to be sent to one document connection before it is closed as slow.
    yjs_send_queue_bytes: usize = 4 << 20, "yjs_send_queue_bytes", "4194304", num, Positive;
    /// Document updates are appended to Postgres at most this often per document.
    yjs_flush: Duration = Duration::from_millis(50), "yjs_flush_ms", "50", ms, Positive;
    /// Document readers are checked again this often (and when their row changes).
    yjs_recheck: Duration = Duration::from_secs(60), "yjs_recheck_ms", "60000", ms, Positive;
    /// How often documents due for compaction are compacted; 0 turns it off here.
    doc_compact_interval: Duration = Duration::from_secs(10), "doc_compact_interval_ms", "10000", ms, Unchecked;
}

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
        if let Some(key) = self.zero_where_positive() {
            return Err(format!("{key} must be positive"));
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

    /// docs/configuration.md lists every setting of the table, in its order, with its
    /// environment variable, its default and whether it must be positive; and each default
    /// it shows as a value is the value the code defaults to.
    #[test]
    fn the_documented_table_is_the_code() {
        let docs = include_str!("../../docs/configuration.md");
        let table = docs.split("## Keys").nth(1).expect("a Keys section");
        let rows: Vec<Vec<String>> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                l.split(" | ")
                    .map(|c| c.trim_matches(['|', ' ']).to_string())
                    .collect()
            })
            .collect();
        let keys: Vec<String> = rows
            .iter()
            .map(|r| r[0].trim_matches('`').to_string())
            .collect();
        let expected: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(keys, expected, "the keys of docs/configuration.md");
        for (row, setting) in rows.iter().zip(SETTINGS) {
            let key = setting.key;
            assert_eq!(
                row[1],
                format!("`ROWSYNC_{}`", key.to_ascii_uppercase()),
                "{key}"
            );
            assert_eq!(
                row[2].trim_matches('`'),
                setting.shown_default,
                "{key}'s default"
            );
            let positive = row.last().is_some_and(|l| l.starts_with("positive"));
            assert_eq!(positive, setting.limit == Limit::Positive, "{key}'s limit");
            if row[2].starts_with('`') {
                let mut config = Config::default();
                config.set(key, setting.shown_default).unwrap();
                assert_eq!(
                    format!("{config:?}"),
                    format!("{:?}", Config::default()),
                    "{key}: the documented default is the code's"
                );
            }
        }
    }

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
