//! A real bridge for the tests, served in-process on port 0, and WebSocket and HTTP clients.

use crate::{eventually, Cluster};
use futures_util::{SinkExt, StreamExt};
use rowsync_bridge::Config;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const JWT_SECRET: &str = "rowsync-test-secret-rowsync-test-secret";

/// An HS256 token for app user `sub`, valid for `ttl` seconds (negative: expired).
pub fn token(sub: &str, ttl: i64) -> String {
    let exp = rowsync_bridge::auth::now() as i64 + ttl;
    rowsync_bridge::auth::hs256_token(JWT_SECRET, sub, "app_user", exp).unwrap()
}

/// A token with these claims (an `exp` an hour away is added), role app_user unless they
/// say otherwise.
pub fn token_with(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(rowsync_bridge::auth::now() + 3600);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

pub struct Bridge {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl Bridge {
    /// Starts a bridge on `db` as the authenticator; `tweak` adjusts its config.
    pub async fn start(cluster: &Cluster, db: &str, tweak: impl FnOnce(&mut Config)) -> Bridge {
        Bridge::start_at(cluster, db, "127.0.0.1:0".parse().unwrap(), tweak).await
    }

    /// Starts a bridge listening on `addr` (a port another bridge left, to stand in for
    /// it after a restart).
    pub async fn start_at(
        cluster: &Cluster,
        db: &str,
        addr: SocketAddr,
        tweak: impl FnOnce(&mut Config),
    ) -> Bridge {
        let env = [
            (
                "ROWSYNC_DATABASE_URL".to_string(),
                cluster.url("rowsync_authenticator", db),
            ),
            ("ROWSYNC_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
            (
                "ROWSYNC_ALLOWED_ORIGINS".to_string(),
                "http://allowed.example".to_string(),
            ),
            ("ROWSYNC_FEED_IDLE_MS".to_string(), "50".to_string()),
        ];
        let mut config = Config::load(None, env).expect("test config");
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(rowsync_bridge::run(listener, config, async move {
            let _ = stopped.await;
        }));
        let bridge = Bridge {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        };
        eventually("the bridge to be healthy", || async {
            (bridge.http("GET", "/health", None, "").await.0 == 200).then_some(())
        })
        .await;
        bridge
    }

    /// Stops the bridge gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub fn ws_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/v1/ws?access_token={t}", self.addr),
            None => format!("ws://{}/v1/ws", self.addr),
        }
    }

    /// A minimal HTTP/1.1 exchange: (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(self.addr).await else {
            return (0, String::new());
        };
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return (0, String::new());
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, dechunk(&body))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Undoes chunked transfer encoding, if the body uses it.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || tail.len() < n {
            return if out.is_empty() && n != 0 {
                body.to_string()
            } else {
                out
            };
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_ref: u64,
    pub welcome: Value,
    /// Every text frame received, as sent: what an eavesdropper on the socket would see.
    pub raw: Vec<String>,
}

const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    /// Connects as `sub` (with a fresh token) and reads the welcome.
    pub async fn connect(bridge: &Bridge, sub: &str) -> Ws {
        Ws::connect_url(&bridge.ws_url(Some(&token(sub, 3600))), None)
            .await
            .expect("connect")
    }

    pub async fn connect_url(
        url: &str,
        origin: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        let mut ws = Ws {
            stream,
            pending: VecDeque::new(),
            next_ref: 0,
            welcome: Value::Null,
            raw: Vec::new(),
        };
        ws.welcome = ws.next().await;
        Ok(ws)
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, text: String) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// Sends `texts` in one write, as a client with a burst queued would; false when the
    /// connection is gone.
    pub async fn burst(&mut self, texts: impl IntoIterator<Item = String>) -> bool {
        for text in texts {
            if self.stream.feed(Message::text(text)).await.is_err() {
                return false;
            }
        }
        self.stream.flush().await.is_ok()
    }

    /// The next frame from the server (pings aside), waiting at most ten seconds.
    pub async fn next(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        self.read().await
    }

    async fn read(&mut self) -> Value {
        self.read_for("a frame").await
    }

    async fn read_for(&mut self, what: &str) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("{what} within ten seconds"))
                .expect("the connection is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => {
                    self.raw.push(text.to_string());
                    return serde_json::from_str(text.as_str()).expect("JSON frame");
                }
                Message::Close(frame) => {
                    return json!({"type": "closed", "code": frame.as_ref().map(|f| u16::from(f.code)), "reason": frame.map(|f| f.reason.to_string())})
                }
                _ => continue,
            }
        }
    }

    /// Subscribes to `keys` and returns the resume token of the `ack`.
    pub async fn subscribe(&mut self, keys: &[&str]) -> String {
        let ack = self
            .request(json!({"type": "subscribe", "keys": keys}))
            .await;
        match ack["cursor"].as_str() {
            Some(cursor) => cursor.to_string(),
            None => panic!("an ack with a cursor: {ack}"),
        }
    }

    /// Sends `frame` with a fresh `ref` and returns the reply that echoes it; frames that
    /// arrive meanwhile are kept for `next` and `wait_for`.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let reference = json!(self.next_ref);
        frame["ref"] = reference.clone();
        let what = format!("the reply to {frame}");
        self.send(frame).await;
        loop {
            let reply = self.read_for(&what).await;
            if reply["ref"] == reference {
                return reply;
            }
            assert_ne!(
                reply["type"], "closed",
                "closed while waiting for a reply: {reply}"
            );
            self.pending.push_back(reply);
        }
    }

    /// The first frame (kept or new) that `matches`, keeping the others.
    pub async fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&matches) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let frame = self.read_for(what).await;
            if matches(&frame) {
                return frame;
            }
            assert_ne!(
                frame["type"], "closed",
                "closed while waiting for {what}: {frame}"
            );
            self.pending.push_back(frame);
        }
    }

    /// The first row of a `changes` message (kept or new) that `matches`; the message's
    /// other rows stay kept, in a message of their own.
    pub async fn wait_for_row(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let has = |f: &Value| {
            f["type"] == "changes"
                && f["rows"]
                    .as_array()
                    .is_some_and(|rows| rows.iter().any(&matches))
        };
        let mut frame = self.wait_for(what, has).await;
        let rows = frame["rows"].as_array_mut().expect("rows");
        let i = rows.iter().position(&matches).expect("a matching row");
        let row = rows.remove(i);
        if !rows.is_empty() {
            self.pending.push_front(frame);
        }
        row
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("closed within ten seconds")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f: CloseFrame| u16::from(f.code))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Frames received so far and not yet taken.
    pub fn kept(&self) -> &VecDeque<Value> {
        &self.pending
    }
}
