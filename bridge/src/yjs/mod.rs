//! Collaborative documents over y-websocket: `GET /v1/yjs/<table>/<id>/<column>`, spoken
//! by the stock `WebsocketProvider`. A document is a column of a synced row
//! (`rowsync.enable_doc`); reading and editing it take what the row's policies and the
//! column's privileges allow, checked as the user when a connection opens, at every
//! append, when the row changes, and every `yjs_recheck_ms`.
//!
//! Edits are relayed at once to the other connections of this bridge ([`room`]),
//! appended to Postgres in batches per writer (`rowsync.doc_append`), and reach other
//! bridges through the change feed ([`Hub::from_feed`]).

pub mod compaction;
mod conn;
mod room;
pub mod wire;

pub use conn::serve;

use crate::auth::Claims;
use crate::errors::Error;
use crate::feed::change::FeedChange;
use crate::keys::{fold, is_name, is_table_name};
use crate::state::AppState;
use room::Room;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Close codes of document connections. The stock y-websocket client stops reconnecting
/// only on 4400–4499, so refusals use that band; 4100–4199 mean "reconnect".
pub mod close {
    /// The token is missing or invalid.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The row is gone or hidden, the column unreadable, or not a document.
    pub const NOT_VISIBLE: u16 = 4404;
    /// Messages that are not y-websocket's, three in a row.
    pub const BAD_MESSAGES: u16 = 4400;
    /// Edits could not be stored: reconnect, and the client sends them again.
    pub const NOT_STORED: u16 = 4110;
}

/// A document: a synced table's name, its row's id, the column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub table: String,
    pub id: String,
    pub col: String,
}

impl DocKey {
    /// From the path after `/v1/yjs/` as sent, still percent-encoded: `table/id/column`.
    /// The id is decoded once, after the path is split, so that an id may hold `/` or `%`.
    /// Table and column are names as keys allow them.
    pub fn from_path(path: &str) -> Option<DocKey> {
        let mut parts = path.split('/');
        let (table, id, col) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let id = percent_decode(id)?;
        (is_table_name(table) && is_name(col) && !id.is_empty() && id.len() <= 512).then(|| {
            DocKey {
                table: table.to_string(),
                id: fold(&id),
                col: col.to_string(),
            }
        })
    }
}

impl DocKey {
    /// The document's room on the presence bus, which carries awareness between bridges.
    pub fn bus_room(&self) -> String {
        format!(
            "yjs:{}/{}/{}",
            self.table,
            percent_encode(&self.id),
            self.col
        )
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The documents open on this bridge.
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<DocKey, Arc<Room>>>,
    /// The changes this bridge appended, recent ones: when the feed brings them back they
    /// are not relayed again (its own clients have them). Known by cursor, which only
    /// Postgres assigns: an `origin` a writer chose could make a bridge skip anything.
    own: std::sync::Mutex<(HashSet<i64>, VecDeque<i64>)>,
}

/// How many of its own appends a bridge remembers; an older one coming back through the
/// feed is relayed once more, which clients take as a no-op.
const OWN_REMEMBERED: usize = 10_000;

impl Hub {
    /// Notes a change this bridge appended.
    pub(crate) fn appended(&self, cursor: i64) {
        if let Ok(mut own) = self.own.lock() {
            let (set, order) = &mut *own;
            if order.len() >= OWN_REMEMBERED {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
            set.insert(cursor);
            order.push_back(cursor);
        }
    }

    fn is_own(&self, cursor: i64) -> bool {
        self.own.lock().is_ok_and(|own| own.0.contains(&cursor))
    }

    /// The open room of `key`, if any.
    async fn get(&self, key: &DocKey) -> Option<Arc<Room>> {
        self.rooms.lock().await.get(key).cloned()
    }

    /// The room of `key`, entered (counted until it is left), loaded once with the
    /// stored document as `claims` may read it.
    async fn open(
        &self,
        app: &AppState,
        claims: &Claims,
        key: &DocKey,
    ) -> Result<Arc<Room>, Error> {
        let room = {
            let mut rooms = self.rooms.lock().await;
            let room = rooms
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Room::new(key.clone(), app.config.yjs_send_queue_bytes))
                })
                .clone();
            room.enter();
            room
        };
        let loaded = room
            .loaded
            .get_or_try_init(|| async {
                let parts = crate::db::doc_parts(&app.pool, claims, key).await?;
                room.fill(parts).await;
                Ok::<(), Error>(())
            })
            .await;
        match loaded {
            Ok(()) => Ok(room),
            Err(e) => {
                room.leave_unjoined();
                self.close_if_empty(&room).await;
                Err(e)
            }
        }
    }

    /// Drops `room` if it is still the open one for its key and nobody is in it.
    async fn close_if_empty(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().await;
        if rooms.get(&room.key).is_some_and(|r| Arc::ptr_eq(r, room)) && !room.occupied() {
            rooms.remove(&room.key);
        }
    }

    /// Delivers the awareness other bridges sent to the open rooms of their documents;
    /// on `announce`, expires the clients of bridges that went silent and announces this
    /// bridge's own again (as presence members are, every third of presence_timeout_ms).
    pub async fn from_bus(&self, app: &AppState, events: Vec<serde_json::Value>, announce: bool) {
        for event in events {
            let (Some(doc), Some(client), Some(clock), Some(json)) = (
                event["room"].as_str().and_then(|r| r.strip_prefix("yjs:")),
                event["client"].as_u64(),
                event["clock"].as_u64(),
                event["state"].as_str(),
            ) else {
                continue;
            };
            let Some(key) = DocKey::from_path(doc) else {
                continue;
            };
            if json.len() > app.config.yjs_max_awareness_bytes {
                continue;
            }
            if let Some(room) = self.get(&key).await {
                room.remote_awareness(client, clock, json, app.config.presence_timeout)
                    .await;
            }
        }
        if announce {
            let rooms: Vec<Arc<Room>> = self.rooms.lock().await.values().cloned().collect();
            for room in rooms {
                let own = room.expire_and_list().await;
                conn::publish(app, &room, own);
            }
        }
    }

    /// Routes a page of the feed: edits other bridges appended go to the open rooms of
    /// their documents, and a change to a row whose document is open here re-checks who
    /// may still read it.
    pub async fn from_feed(&self, app: &Arc<AppState>, client: &Client, page: &[FeedChange]) {
        if self.rooms.lock().await.is_empty() {
            return;
        }
        let mut cursors = Vec::new();
        let mut wanted: HashMap<i64, DocKey> = HashMap::new();
        let mut changed_rows: HashSet<(&str, &str)> = HashSet::new();
        for change in page {
            let (Some(table), Some(id)) = (&change.table, &change.row_id) else {
                continue;
            };
            if change.kind != "doc" {
                changed_rows.insert((table, id));
                continue;
            }
            // This bridge's own appends: its clients have them already.
            if self.is_own(change.cursor) {
                continue;
            }
            let key = DocKey {
                table: table.clone(),
                id: id.clone(),
                col: change.topic.clone().unwrap_or_default(),
            };
            if self.get(&key).await.is_some() {
                cursors.push(change.cursor);
                wanted.insert(change.cursor, key);
            }
        }
        // Each room whose row changed checks its members once per page, however many
        // changes the row had.
        if !changed_rows.is_empty() {
            let rooms: Vec<Arc<Room>> = {
                let rooms = self.rooms.lock().await;
                rooms
                    .iter()
                    .filter(|(k, _)| changed_rows.contains(&(k.table.as_str(), k.id.as_str())))
                    .map(|(_, r)| r.clone())
                    .collect()
            };
            for room in rooms {
                tokio::spawn(conn::recheck(app.clone(), room));
            }
        }
        if cursors.is_empty() {
            return;
        }
        let rows = match client
            .query(
                "SELECT tbl, row_id, col::text, updates, cursor FROM rowsync.read_doc_updates($1)",
                &[&cursors],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "reading document updates from the feed");
                return;
            }
        };
        let found: HashSet<i64> = rows.iter().map(|row| row.get(4)).collect();
        // Compacted before this bridge read them: the whole document is sent again
        // (clients take what they hold already as a no-op).
        let gone: HashSet<DocKey> = wanted
            .into_iter()
            .filter(|(cursor, _)| !found.contains(cursor))
            .map(|(_, key)| key)
            .collect();
        for key in gone {
            if let Some(room) = self.get(&key).await {
                tokio::spawn(conn::reload(app.clone(), room));
            }
        }
        for row in rows {
            let key = DocKey {
                table: row.get(0),
                id: row.get(1),
                col: row.get(2),
            };
            if let Some(room) = self.get(&key).await {
                room.remote(row.get(3)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part is decoded once, after the split: an id may hold `/` and `%`, UUIDs are
    /// folded to lower case, names are names, and the bus room spells the key back.
    #[test]
    fn document_paths_decode_once() {
        let key = DocKey::from_path("app.notes/a%2Fb%25c/body").unwrap();
        assert_eq!(
            (key.table.as_str(), key.id.as_str(), key.col.as_str()),
            ("app.notes", "a/b%c", "body")
        );
        assert_eq!(
            DocKey::from_path(key.bus_room().strip_prefix("yjs:").unwrap()),
            Some(key)
        );
        let uuid = DocKey::from_path("tasks/0000000A-0000-4000-8000-000000000001/description");
        assert_eq!(uuid.unwrap().id, "0000000a-0000-4000-8000-000000000001");
        for bad in [
            "tasks/1",
            "tasks/1/description/more",
            "tasks//description",
            "a./1/description",
            ".b/1/description",
            "tasks/1/de;scription",
            "tasks/%zz/description",
        ] {
            assert_eq!(DocKey::from_path(bad), None, "{bad}");
        }
    }
}
