//! The fan-out, memory and resume load generator (docs/benchmarks.md). Opens N WebSocket
//! connections to a bridge (or to rowsync-refserver), subscribes them to one shared scope
//! or to one record each, writes at a fixed rate, and reports, as one JSON line, commit →
//! row latency (the row arrives in the `changes` message, so this is what a user waits
//! for), rows delivered per second, and how many expected deliveries never came.
//!
//!   rowsync-loadgen --url ws://H:P/v1/ws --connections N --mode shared|half|distinct|idle
//!       (shared: scope grp=1, every row visible; half: scope grp=3, where policies hide
//!       every even row; distinct: a record each; idle: subscribe, then hold the
//!       connections for --seconds without writing)
//!       [--users U] (distinct users, connection i is u{i mod U}; default one per
//!       connection) [--reference] [--db CONNSTR] [--secret JWT_SECRET] [--rate W]
//!       [--seconds S]
//!   rowsync-loadgen --url … --db … --secret … --resume N
//!
//! Bridge mode writes `UPDATE bench.items SET n = n + 1 … RETURNING version` through
//! Postgres and times from the commit; reference mode publishes to the refserver and times
//! from the send. Latency is sampled on the first 200 connections (every one with
//! distinct keys); every delivered row is counted, and a hidden row delivered is a leak.

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
    users: usize,
    /// `items`, or `scoped`: the same shared scope under `visibility => 'scope'`.
    table: String,
    /// Processes whose CPU time during the writes and the drain is reported.
    server_pid: Option<u32>,
    postgres_pid: Option<u32>,
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
        users: 0,
        table: "items".into(),
        server_pid: None,
        postgres_pid: None,
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
            "--users" => a.users = value().parse().expect("--users"),
            "--table" => {
                a.table = value();
                assert!(
                    ["items", "scoped"].contains(&a.table.as_str()),
                    "--table items|scoped"
                );
            }
            "--server-pid" => a.server_pid = Some(value().parse().expect("--server-pid")),
            "--postgres-pid" => a.postgres_pid = Some(value().parse().expect("--postgres-pid")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn token(secret: &str, sub: &str) -> String {
    let exp = rowsync_bridge::auth::now() as i64 + 3600;
    rowsync_bridge::auth::hs256_token(secret, sub, "bench_user", exp).unwrap()
}

fn key(table: &str, mode: &str, i: usize) -> String {
    match mode {
        "distinct" => format!("{table}:{}", i + 201),
        "half" => format!("{table}?grp=3"),
        _ => format!("{table}?grp=1"),
    }
}

/// The ids the writes go to, in turn.
fn written_ids(mode: &str, connections: usize) -> std::ops::RangeInclusive<i64> {
    match mode {
        "distinct" => 201..=200 + connections as i64,
        "half" => 101..=200,
        _ => 1..=100,
    }
}

/// Whether every subscriber may see row `id`: all but the even rows of grp=3 (101–200).
fn visible(id: i64) -> bool {
    !(101..=200).contains(&id) || id % 2 == 1
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
    let users = if a.users == 0 { a.connections } else { a.users };
    let tokens: Vec<String> = (0..users.min(a.connections).max(1))
        .map(|u| token(&a.secret, &format!("u{u}")))
        .collect();
    let url_of = |i: usize| {
        if a.reference {
            a.url.clone()
        } else {
            format!("{}?access_token={}", a.url, tokens[i % tokens.len()])
        }
    };
    if let Some(n) = a.resume {
        return resume(&a, &url_of(0), n).await;
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let leaks = Arc::new(AtomicU64::new(0));
    let commits: Commits = Arc::default();
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut readers = Vec::new();
    let started = Instant::now();
    for i in 0..a.connections {
        // Idle connections each send one frame: a subscribe to a record of their own.
        let mode = if a.mode == "idle" {
            "distinct"
        } else {
            &a.mode
        };
        let mut socket = open(&url_of(i), vec![key(&a.table, mode, i)], None).await;
        let acked = acked.clone();
        let (delivered, leaks, commits, samples) = (
            delivered.clone(),
            leaks.clone(),
            commits.clone(),
            samples.clone(),
        );
        // Timing a row means parsing it. With a shared scope every connection gets every
        // row, so 200 connections are a large enough sample; with distinct keys each row
        // reaches one connection, and every one is timed.
        let timed = i < 200 || a.mode == "distinct";
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if text.as_str().contains(r#""type":"ack""#) {
                    acked.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !text.as_str().contains(r#""type":"changes""#) {
                    continue;
                }
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                for row in v["rows"].as_array().into_iter().flatten() {
                    if row["op"] != "upsert" {
                        continue;
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                    let id = row["row"]["id"].as_i64().unwrap_or(0);
                    if !visible(id) {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                    if timed {
                        let version = row["row"]["version"].as_i64().unwrap_or(0);
                        let at = commits.lock().unwrap().get(&(id, version)).copied();
                        if let Some(at) = at {
                            samples
                                .lock()
                                .unwrap()
                                .push(at.elapsed().as_micros() as u64);
                        }
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
    // Every subscription in place (the bridge checks each) before the first write.
    let waiting = Instant::now();
    while acked.load(Ordering::Relaxed) < a.connections as u64
        && waiting.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = (cpu(a.server_pid, false), cpu(a.postgres_pid, true));
    let ids = written_ids(&a.mode, a.connections);
    let (writes, visible_writes) = write_load(&a, ids, commits.clone()).await;
    let expected = if a.mode == "distinct" {
        visible_writes
    } else {
        visible_writes * a.connections as u64
    };
    // Drained: nothing more arrives for a second (or everything did), at most 30 s.
    let drain = Instant::now();
    let mut last = u64::MAX;
    while drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now >= expected || now == last {
            break;
        }
        last = now;
    }
    let delivered = delivered.load(Ordering::Relaxed);
    let seconds = |after: Option<f64>, before: Option<f64>| Some(after? - before?);
    let server_cpu = seconds(cpu(a.server_pid, false), cpu_before.0);
    let postgres_cpu = seconds(cpu(a.postgres_pid, true), cpu_before.1);
    let mut s = samples.lock().unwrap().clone();
    s.sort_unstable();
    let pct = |p: f64| {
        s.get(((s.len() as f64 - 1.0) * p) as usize)
            .map(|v| *v as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        json!({
            "target": if a.reference { "reference" } else { "bridge" },
            "mode": a.mode, "connections": a.connections, "users": tokens.len(),
            "rate": a.rate, "seconds": a.seconds, "writes": writes,
            "delivered": delivered, "expected": expected,
            "undelivered": expected.saturating_sub(delivered),
            "hidden_rows_delivered": leaks.load(Ordering::Relaxed),
            "deliveries_per_second": delivered as f64 / a.seconds as f64,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0), "samples": s.len()},
            "server_cpu_seconds": server_cpu,
            "postgres_cpu_seconds": postgres_cpu,
            "postgres_us_per_row": postgres_cpu.map(|c| c * 1e6 / delivered.max(1) as f64),
        })
    );
    for r in readers {
        r.abort();
    }
}

/// CPU seconds (user + system) process `pid` has used; with `children`, also those of its
/// ended children (proc(5): cutime, cstime, counted when it reaps them) and its live ones:
/// a postmaster and its backends.
fn cpu(pid: Option<u32>, children: bool) -> Option<f64> {
    let pid = pid?;
    let fields = |pid: u32| -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
    };
    // After the name: state is field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    let own = fields(pid)?;
    let mut ticks = own[11] + own[12];
    if children {
        ticks += own[13] + own[14];
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(f) = fields(child).filter(|f| f[1] == u64::from(pid)) {
                ticks += f[11] + f[12];
            }
        }
    }
    // Clock ticks are USER_HZ, 100 a second on Linux whatever the kernel's own rate.
    Some(ticks as f64 / 100.0)
}

/// Writes at `rate` per second for `seconds`, to `ids` in turn; returns how many writes
/// committed, and how many of them to rows every subscriber may see.
async fn write_load(a: &Args, ids: std::ops::RangeInclusive<i64>, commits: Commits) -> (u64, u64) {
    let (first, rows) = (*ids.start(), ids.end() - ids.start() + 1);
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let done = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
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
            let id = first + n % rows;
            commits.lock().unwrap().insert((id, n), Instant::now());
            let k = key(&a.table, &a.mode, (id - 201).max(0) as usize);
            let frame = json!({"type": "publish", "key": k, "table": a.table, "row": {"id": id, "version": n}});
            if publisher
                .send(Message::text(frame.to_string()))
                .await
                .is_err()
            {
                break;
            }
            done.fetch_add(1, Ordering::Relaxed);
            if visible(id) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        return (done.load(Ordering::Relaxed), seen.load(Ordering::Relaxed));
    }
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (client, connection) = tokio_postgres::connect(&a.db, tokio_postgres::NoTls)
            .await
            .expect("database");
        tokio::spawn(connection);
        clients.push(Arc::new(client));
    }
    let update = format!(
        "UPDATE bench.{} SET n = n + 1 WHERE id = $1 RETURNING version",
        a.table
    );
    let mut tasks = Vec::new();
    while Instant::now() < deadline {
        tick.tick().await;
        n += 1;
        let id = first + n % rows;
        let client = clients[(n % 4) as usize].clone();
        let (commits, done, seen) = (commits.clone(), done.clone(), seen.clone());
        let visible = visible(id);
        let update = update.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(row) = client.query_one(&update, &[&id]).await else {
                return;
            };
            let version: i64 = row.get(0);
            commits
                .lock()
                .unwrap()
                .insert((id, version), Instant::now());
            done.fetch_add(1, Ordering::Relaxed);
            if visible {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (done.load(Ordering::Relaxed), seen.load(Ordering::Relaxed))
}

/// A client `n` changes behind: time from its resuming subscribe until it holds the newest
/// version of every row it missed.
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
    // Catch-up sends each row as it is now, once per page of the log it changed in; the
    // ack comes after the last.
    let mut rows: std::collections::HashSet<i64> = Default::default();
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                if v["type"] == "ack" {
                    break;
                }
                for row in v["rows"].as_array().into_iter().flatten() {
                    if let Some(id) = row["row"]["id"].as_i64() {
                        received += 1;
                        rows.insert(id);
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    println!(
        "{}",
        json!({"resume_changes": made, "rows_received": received, "distinct_rows": rows.len(), "rows_per_statement": per_statement, "seconds": started.elapsed().as_secs_f64()})
    );
}
