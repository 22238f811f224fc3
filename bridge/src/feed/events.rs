//! Who receives the server events of a batch: the connections following each event's
//! topic (subscribers of the key, members of the room of that name) whose identity may
//! follow it now. A subscription is checked when it is made and again when access
//! changes, but those checks run beside the feed: without this one, an event sent in the
//! transaction that removed a member, or just after, reached the removed member. One
//! statement (`rowsync.followers`) checks many identities, each under its own role and
//! claims, as rows are checked (`visibility.rs`). `user:<sub>` topics need no check:
//! they reach only that user's own connections.

use crate::auth::Identity;
use crate::feed::change::FeedChange;
use crate::feed::visibility::{checking_transaction, Error};
use crate::keys::Key;
use crate::router::{ConnId, Subscriber};
use crate::state::AppState;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// For each change of the page that is an event, the connections to send it to.
pub struct Recipients {
    pub per_change: HashMap<usize, Vec<Arc<Subscriber>>>,
    /// Connections whose identity could not be checked, with the topics they missed.
    pub unchecked: Vec<(Arc<Subscriber>, Vec<String>)>,
}

/// An event (its index in the page), its topic's index, and the connections it would reach.
type Candidates = (usize, usize, Vec<(ConnId, Arc<Subscriber>)>);

pub async fn plan(state: &AppState, page: &[FeedChange]) -> Result<Recipients, Error> {
    let mut recipients = Recipients {
        per_change: HashMap::new(),
        unchecked: Vec::new(),
    };
    // Each event's candidates, and the topics (by index) each identity must pass.
    let mut candidates: Vec<Candidates> = Vec::new();
    // Each topic once: as the event named it, and parsed.
    let mut topics: Vec<(String, Key)> = Vec::new();
    let mut wanted: BTreeMap<Arc<Identity>, BTreeSet<usize>> = BTreeMap::new();
    for (j, change) in page.iter().enumerate() {
        if change.kind != "event" {
            continue;
        }
        let (Some(topic), Some(key)) = (&change.topic, change.router_topic()) else {
            continue;
        };
        let mut followers = state.router.followers(&key);
        if topic.starts_with("user:") {
            recipients
                .per_change
                .insert(j, followers.into_iter().map(|(_, s)| s).collect());
            continue;
        }
        for conn in state.presence.local_members(topic) {
            if !followers.iter().any(|(c, _)| *c == conn) {
                if let Some(subscriber) = state.router.subscriber(conn) {
                    followers.push((conn, subscriber));
                }
            }
        }
        let Ok(parsed) = Key::parse(topic) else {
            continue;
        };
        let t = match topics.iter().position(|(text, _)| text == topic) {
            Some(t) => t,
            None => {
                topics.push((topic.clone(), parsed));
                topics.len() - 1
            }
        };
        for (_, subscriber) in &followers {
            wanted.entry(subscriber.identity()).or_default().insert(t);
        }
        candidates.push((j, t, followers));
    }
    if candidates.is_empty() {
        return Ok(recipients);
    }
    let allowed = check(state, &topics, &wanted).await?;
    let mut missed: HashMap<ConnId, (Arc<Subscriber>, BTreeSet<String>)> = HashMap::new();
    for (j, t, followers) in candidates {
        let mut to = Vec::new();
        for (conn, subscriber) in followers {
            match allowed.get(&subscriber.identity()) {
                Some(Some(topics)) if topics.contains(&t) => to.push(subscriber),
                Some(Some(_)) => {}
                _ => {
                    missed
                        .entry(conn)
                        .or_insert_with(|| (subscriber.clone(), BTreeSet::new()))
                        .1
                        .insert(topics[t].0.clone());
                }
            }
        }
        recipients.per_change.insert(j, to);
    }
    recipients.unchecked = missed
        .into_values()
        .map(|(s, topics)| (s, topics.into_iter().collect()))
        .collect();
    Ok(recipients)
}

/// Each identity's allowed topics; `None` for one whose check failed (a policy raised,
/// or ran past `visibility_timeout_ms`).
async fn check(
    state: &AppState,
    topics: &[(String, Key)],
    wanted: &BTreeMap<Arc<Identity>, BTreeSet<usize>>,
) -> Result<HashMap<Arc<Identity>, Option<BTreeSet<usize>>>, Error> {
    let mut tables = Vec::new();
    let mut cols: Vec<Option<&str>> = Vec::new();
    let mut vals: Vec<Option<&str>> = Vec::new();
    for (_, key) in topics {
        match key {
            Key::Record { table, id } => {
                tables.push(table.as_str());
                cols.push(None);
                vals.push(Some(id.as_str()));
            }
            Key::Scope {
                table,
                column,
                value,
            } => {
                tables.push(table.as_str());
                cols.push(Some(column.as_str()));
                vals.push(Some(value.as_str()));
            }
            Key::Table { table } => {
                tables.push(table.as_str());
                cols.push(None);
                vals.push(None);
            }
        }
    }
    let wanted: Vec<(&Arc<Identity>, &BTreeSet<usize>)> = wanted.iter().collect();
    let mut allowed = HashMap::new();
    for chunk in wanted.chunks(state.config.visibility_batch) {
        let mut answers = call(state, chunk, &tables, &cols, &vals).await?;
        // A statement that failed is retried one identity at a time, so that only the
        // identities that fail alone go unchecked.
        if chunk.len() > 1 && answers.iter().all(|(_, a)| a.is_none()) {
            answers.clear();
            for one in chunk.chunks(1) {
                answers.append(&mut call(state, one, &tables, &cols, &vals).await?);
            }
        }
        allowed.extend(answers);
    }
    Ok(allowed)
}

const FOLLOWERS: &str = "SELECT identity, key_index, error FROM rowsync.followers($1, $2, $3, $4)";

/// Runs `rowsync.followers` for `chunk` in a read-only transaction of its own, as
/// `visible_rows` runs: one snapshot, a statement timeout, role and claims gone at commit.
/// A statement that fails leaves the whole chunk unchecked.
async fn call(
    state: &AppState,
    chunk: &[(&Arc<Identity>, &BTreeSet<usize>)],
    tables: &[&str],
    cols: &[Option<&str>],
    vals: &[Option<&str>],
) -> Result<Vec<(Arc<Identity>, Option<BTreeSet<usize>>)>, Error> {
    let identities: Vec<Value> = chunk
        .iter()
        .map(|(identity, keys)| {
            json!({"role": identity.role, "claims": identity.claims, "keys": keys})
        })
        .collect();
    let mut answers: Vec<(Arc<Identity>, Option<BTreeSet<usize>>)> = chunk
        .iter()
        .map(|(identity, _)| ((*identity).clone(), Some(BTreeSet::new())))
        .collect();
    let mut client = state.pool.get().await?;
    let tx = checking_transaction(&mut client, &state.config).await?;
    let statement = tx.prepare_cached(FOLLOWERS).await?;
    let rows = match tx
        .query(
            &statement,
            &[&Value::Array(identities), &tables, &cols, &vals],
        )
        .await
    {
        Ok(rows) => rows,
        Err(error) if error.as_db_error().is_some() => {
            tracing::warn!(%error, "event recipients not checked");
            return Ok(answers.into_iter().map(|(i, _)| (i, None)).collect());
        }
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    for row in rows {
        let i: i32 = row.get(0);
        let Some((identity, answer)) = answers.get_mut(i as usize) else {
            continue;
        };
        let error: Option<String> = row.get(2);
        if let Some(error) = error {
            tracing::warn!(role = %identity.role, %error, "a policy raised: event recipients not checked");
            *answer = None;
            continue;
        }
        let k: Option<i32> = row.get(1);
        if let (Some(k), Some(topics)) = (k, answer.as_mut()) {
            topics.insert(k as usize);
        }
    }
    Ok(answers)
}
