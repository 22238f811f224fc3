//! The fan-out, memory and resume load generator (docs/benchmarks.md). Opens N WebSocket
//! connections to a bridge (or to rowsync-refserver), subscribes them to one shared scope
//! or to one record each, writes at a fixed rate, and reports commit-to-frame latency and
//! delivered changes per second as one JSON line.
//!
//!   rowsync-loadgen --url ws://H:P/v1/ws --connections N --mode shared|distinct|idle
//!       (idle: subscribe, then hold the connections for --seconds without writing)
//!       [--reference] [--db CONNSTR] [--secret JWT_SECRET] [--rate W] [--seconds S]
//!   rowsync-loadgen --url … --db … --secret … --resume N
//!
//! Bridge mode writes `UPDATE bench.items SET n = n + 1 … RETURNING version` through
//! Postgres and times from the commit; reference mode publishes to the refserver and times
//! from the send. Latency is sampled on the first 200 connections; every frame is counted.
//! With distinct keys against the bridge, each connection also does what the client does
//! with a `change`: it fetches the row, and the time from the commit to that row's arrival
//! is the data latency, what a user waits for.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Commits = Arc<Mutex<HashMap<(i64, i64), Instant>>>;

struct Args {
    url: String,
    connections: usize,
    mode: String,
    reference: bool,
    db: String,
    secret: String,
    rate: u64,
    seconds: u64,
    resume: Option<i64>,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        connections: 1000,
        mode: "shared".into(),
        reference: false,
        db: String::new(),
        secret: String::new(),
        rate: 100,
        seconds: 10,
        resume: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => a.url = value(),
            "--connections" => a.connections = value().parse().expect("--connections"),
            "--mode" => a.mode = value(),
            "--reference" => a.reference = true,
            "--db" => a.db = value(),
            "--secret" => a.secret = value(),
            "--rate" => a.rate = value().parse().expect("--rate"),
            "--seconds" => a.seconds = value().parse().expect("--seconds"),
            "--resume" => a.resume = Some(value().parse().expect("--resume")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn token(secret: &str) -> String {
    let exp = rowsync_bridge::auth::now() as i64 + 3600;
    rowsync_bridge::auth::hs256_token(secret, "bench", "postgres", exp).unwrap()
}

fn key(mode: &str, i: usize) -> String {
    if mode == "distinct" {
        format!("items:{}", i + 1)
    } else {
        "items?grp=1".into()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, keys: Vec<String>, cursor: Option<String>) -> Socket {
    let (mut socket, _) = loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _welcome = socket.next().await;
    if !keys.is_empty() {
        let mut frame = json!({"type": "subscribe", "ref": 1, "keys": keys});
        if let Some(c) = cursor {
            frame["cursor"] = json!(c);
        }
        socket
            .send(Message::text(frame.to_string()))
            .await
            .expect("subscribe");
    }
    socket
}

#[tokio::main]
async fn main() {
    let a = args();
    let url = if a.reference {
        a.url.clone()
    } else {
        format!("{}?access_token={}", a.url, token(&a.secret))
    };
    if let Some(n) = a.resume {
        return resume(&a, &url, n).await;
    }
    let frames = Arc::new(AtomicU64::new(0));
    let commits: Commits = Arc::default();
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let data_samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let fetches = !a.reference && a.mode == "distinct";
    let mut readers = Vec::new();
    let started = Instant::now();
    for i in 0..a.connections {
        // Idle connections each send one frame: a subscribe to a record of their own.
        let keys = vec![key(
            if a.mode == "idle" {
                "distinct"
            } else {
                &a.mode
            },
            i,
        )];
        let mut socket = open(&url, keys, None).await;
        let (frames, commits, samples) = (frames.clone(), commits.clone(), samples.clone());
        let data_samples = data_samples.clone();
        // Timing a frame means parsing it. With shared keys every connection gets every
        // change, so 200 connections are a large enough sample; with distinct keys each
        // change reaches one connection, and every one is timed.
        let timed = i < 200 || a.mode == "distinct";
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if fetches && text.as_str().contains("\"records\"") {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    let row = &v["records"][0]["row"];
                    let (id, version) = (row["id"].as_i64(), row["version"].as_i64());
                    if let (Some(id), Some(version)) = (id, version) {
                        let at = commits.lock().unwrap().get(&(id, version)).copied();
                        if let Some(at) = at {
                            data_samples
                                .lock()
                                .unwrap()
                                .push(at.elapsed().as_micros() as u64);
                        }
                    }
                    continue;
                }
                if !text.as_str().starts_with("{\"") || !text.as_str().contains("\"change\"") {
                    continue;
                }
                frames.fetch_add(1, Ordering::Relaxed);
                if timed {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    let id = v["id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| v["id"].as_i64())
                        .unwrap_or(0);
                    let version = v["version"].as_i64().unwrap_or(0);
                    if fetches {
                        let fetch = json!({"type": "fetch", "keys": [format!("items:{id}")]});
                        let _ = socket.send(Message::text(fetch.to_string())).await;
                    }
                    let at = commits.lock().unwrap().get(&(id, version)).copied();
                    if let Some(at) = at {
                        samples
                            .lock()
                            .unwrap()
                            .push(at.elapsed().as_micros() as u64);
                    }
                }
            }
        }));
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open in {connect_seconds:.1} s",
        a.connections
    );
    if a.mode == "idle" {
        println!(
            "{}",
            json!({"connections": a.connections, "connect_seconds": connect_seconds})
        );
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        return;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = if a.mode == "distinct" {
        a.connections as i64
    } else {
        100
    };
    let writes = write_load(&a, rows, commits.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = frames.load(Ordering::Relaxed);
    let latency = |samples: &Mutex<Vec<u64>>| {
        let mut s = samples.lock().unwrap().clone();
        s.sort_unstable();
        let pct = |p: f64| {
            s.get(((s.len() as f64 - 1.0) * p) as usize)
                .map(|v| *v as f64 / 1000.0)
                .unwrap_or(f64::NAN)
        };
        json!({"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": s.len()})
    };
    println!(
        "{}",
        json!({
            "target": if a.reference { "reference" } else { "bridge" },
            "mode": a.mode, "connections": a.connections, "rate": a.rate, "seconds": a.seconds,
            "writes": writes, "frames": delivered,
            "frames_per_second": delivered as f64 / a.seconds as f64,
            "expected_frames": if a.mode == "shared" { writes * a.connections as u64 } else { writes },
            "latency_ms": latency(&samples),
            "data_latency_ms": if fetches { latency(&data_samples) } else { Value::Null },
        })
    );
    for r in readers {
        r.abort();
    }
}

/// Writes at `rate` per second for `seconds`; returns how many writes committed.
async fn write_load(a: &Args, rows: i64, commits: Commits) -> u64 {
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: i64 = 0;
    if a.reference {
        let (mut publisher, _) = tokio_tungstenite::connect_async(&a.url)
            .await
            .expect("publisher");
        let _ = publisher.next().await;
        while Instant::now() < deadline {
            tick.tick().await;
            n += 1;
            let id = n % rows + 1;
            commits.lock().unwrap().insert((id, n), Instant::now());
            let k = if a.mode == "distinct" {
                format!("items:{id}")
            } else {
                "items?grp=1".into()
            };
            let frame = json!({"type": "publish", "key": k, "table": "items", "id": id.to_string(), "version": n});
            if publisher
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        return done.load(Ordering::Relaxed);
    }
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, connection) = tokio_postgres::connect(&a.db, tokio_postgres::NoTls)
            .await
            .expect("database");
        tokio::spawn(connection);
        clients.push(Arc::new(client));
    }
    let mut tasks = Vec::new();
    while Instant::now() < deadline {
        tick.tick().await;
        n += 1;
        let id = n % rows + 1;
        let client = clients[(n % 4) as usize].clone();
        let (commits, done) = (commits.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(row) = client
                .query_one(
                    "UPDATE bench.items SET n = n + 1 WHERE id = $1 RETURNING version",
                    &[&id],
                )
                .await
            else {
                return;
            };
            let version: i64 = row.get(0);
            commits
                .lock()
                .unwrap()
                .insert((id, version), Instant::now());
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

/// A client `n` changes behind: time from its resuming subscribe to the last missed frame.
async fn resume(a: &Args, url: &str, n: i64) {
    let mut socket = open(url, vec!["items?grp=1".into()], None).await;
    let mut cursor = None;
    while let Some(Ok(Message::Text(text))) = socket.next().await {
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        if v["type"] == "ack" {
            cursor = v["cursor"].as_str().map(str::to_string);
            break;
        }
    }
    drop(socket);
    let (client, connection) = tokio_postgres::connect(&a.db, tokio_postgres::NoTls)
        .await
        .expect("database");
    tokio::spawn(connection);
    let per_statement: i64 = client
        .query_one("SELECT count(*) FROM bench.items WHERE grp = 1", &[])
        .await
        .unwrap()
        .get(0);
    let mut made = 0;
    while made < n {
        made += client
            .execute("UPDATE bench.items SET n = n + 1 WHERE grp = 1", &[])
            .await
            .unwrap() as i64;
    }
    // Let the bridge's feed pass the last write, so that catch-up carries them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut socket = open(url, vec!["items?grp=1".into()], cursor).await;
    let mut received = 0;
    while received < made {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str().contains("\"change\"") => {
                received += 1
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    println!(
        "{}",
        json!({"resume_changes": made, "received": received, "rows_per_statement": per_statement, "seconds": started.elapsed().as_secs_f64()})
    );
}
