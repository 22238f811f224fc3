//! The ceiling for the fan-out benchmark: a broadcast server with no database. Clients
//! subscribe to keys; a publisher's `{"type":"publish","key","table","row"}` goes to
//! every subscriber of the key as a `changes` message of the bridge's shape, row included.
//!   rowsync-refserver ADDRESS

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Subscribers = Arc<RwLock<HashMap<String, Vec<mpsc::Sender<Message>>>>>;

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind");
    println!("listening {}", listener.local_addr().expect("address"));
    let subscribers: Subscribers = Arc::default();
    let cursor = Arc::new(AtomicI64::new(0));
    while let Ok((stream, _)) = listener.accept().await {
        let (subscribers, cursor) = (subscribers.clone(), cursor.clone());
        tokio::spawn(async move {
            let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = socket.split();
            let (tx, mut rx) = mpsc::channel::<Message>(1024);
            let writer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            });
            let _ = tx
                .send(Message::text(json!({"type": "welcome"}).to_string()))
                .await;
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match frame["type"].as_str() {
                    Some("subscribe") => {
                        let keys: Vec<String> = frame["keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                        if let Ok(mut map) = subscribers.write() {
                            for key in &keys {
                                map.entry(key.clone()).or_default().push(tx.clone());
                            }
                        }
                        let ack = json!({"type": "ack", "ref": frame["ref"], "keys": keys, "cursor": cursor.load(Ordering::Relaxed)});
                        let _ = tx.send(Message::text(ack.to_string())).await;
                    }
                    Some("publish") => {
                        let key = frame["key"].as_str().unwrap_or_default().to_string();
                        let c = cursor.fetch_add(1, Ordering::Relaxed) + 1;
                        let row = &frame["row"];
                        let change = json!({"type": "changes", "rows": [{"op": "upsert", "table": frame["table"], "id": row["id"].to_string(), "version": row["version"], "row": row, "keys": [key]}], "cursor": c.to_string()}).to_string();
                        let targets = subscribers
                            .read()
                            .map(|m| m.get(&key).cloned().unwrap_or_default())
                            .unwrap_or_default();
                        for target in targets {
                            // Like the bridge, a subscriber that cannot keep up is dropped.
                            let _ = target.try_send(Message::text(change.clone()));
                        }
                    }
                    _ => {}
                }
            }
            writer.abort();
        });
    }
}
