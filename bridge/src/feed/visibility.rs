//! What each connection is sent for the rows of a batch: the row as its identity may see
//! it now, or a `remove`. One statement (`rowsync.visible_rows`) checks many identities at
//! once, each under its own role and claims, and returns the rows' data with the answer,
//! so nothing is fetched per connection. Connections of one identity share its check.

use crate::auth::Identity;
use crate::config::Config;
use crate::feed::change::{record_hash, FeedChange};
use crate::protocol::RowItem;
use crate::router::{Interest, Subscriber};
use deadpool_postgres::Pool;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_postgres::IsolationLevel;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A row of a batch: its newest change, with every key any of its changes concerned (a
/// row that moved from one scope to another concerns both).
pub struct BatchRow {
    pub change: FeedChange,
    /// Each key with its scope's (column, value); `None` for the record key.
    pub keys: Vec<(String, Option<(String, String)>)>,
    pub record: u64,
}

/// The page's row changes, one per row; and for each change, its row's index when it is
/// that row's newest change in the page (where the row's items go in feed order).
pub fn coalesce(page: &[FeedChange]) -> (Vec<BatchRow>, Vec<Option<usize>>) {
    let mut rows: Vec<BatchRow> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut newest = vec![None; page.len()];
    // Where each row's newest change so far is in the page.
    let mut at: Vec<usize> = Vec::new();
    for (j, change) in page.iter().enumerate() {
        // A document's edits name its row, but the row did not change.
        if change.kind == "doc" {
            continue;
        }
        let (Some(table), Some(id)) = (change.table.as_deref(), change.row_id.as_deref()) else {
            continue;
        };
        match index.get(&(table, id)) {
            Some(&r) => {
                let row = &mut rows[r];
                for part in change.key_parts() {
                    if !row.keys.iter().any(|(k, _)| *k == part.0) {
                        row.keys.push(part);
                    }
                }
                row.change = change.clone();
                newest[at[r]] = None;
                newest[j] = Some(r);
                at[r] = j;
            }
            None => {
                index.insert((table, id), rows.len());
                newest[j] = Some(rows.len());
                at.push(j);
                rows.push(BatchRow {
                    change: change.clone(),
                    keys: change.key_parts(),
                    record: record_hash(table, id),
                });
            }
        }
    }
    (rows, newest)
}

/// What to queue for a batch: per row, the item each interested connection gets; and the
/// connections whose identity could not be checked, with the keys to read again.
pub struct Plan {
    pub per_row: Vec<Vec<(Arc<Subscriber>, Arc<RowItem>)>>,
    pub resyncs: Vec<(Arc<Subscriber>, Vec<String>)>,
}

/// Decides what every interested connection is sent for `rows`.
///
/// Rows of an `rls` table are checked for every identity that follows them. Rows of a
/// `scope` table, followed through scope keys, are checked for two of the scope's
/// identities (per role), chosen afresh each batch, and what they see goes to every
/// follower of the scope: the table's owner declared that whoever may follow a scope may
/// read its rows, and following is checked at subscribe and whenever access changes. Two
/// readers that disagree prove the declaration false: the row falls back to a check per
/// identity, and `violations` counts it.
pub async fn plan(
    pool: &Pool,
    config: &Config,
    rows: &[BatchRow],
    interests: Vec<Interest>,
    scope_tables: &HashSet<String>,
    violations: &AtomicU64,
) -> Result<Plan, Error> {
    let mut plan = Plan {
        per_row: vec![Vec::new(); rows.len()],
        resyncs: Vec::new(),
    };
    if interests.is_empty() {
        return Ok(plan);
    }
    let identities: Vec<Arc<Identity>> =
        interests.iter().map(|i| i.subscriber.identity()).collect();
    // Followers of a scope-mode row through scope keys, by (row, first key, role).
    let mut groups: HashMap<(usize, usize, &str), Vec<usize>> = HashMap::new();
    let mut wanted: HashMap<&Identity, BTreeSet<usize>> = HashMap::new();
    for (i, (interest, identity)) in interests.iter().zip(&identities).enumerate() {
        for (r, matched) in &interest.rows {
            let row = &rows[*r];
            let by_scope = row
                .change
                .table
                .as_ref()
                .is_some_and(|t| scope_tables.contains(t))
                && matched.iter().all(|k| row.keys[*k].1.is_some());
            if by_scope {
                groups
                    .entry((*r, matched[0], identity.role.as_str()))
                    .or_default()
                    .push(i);
            } else {
                wanted.entry(identity).or_default().insert(*r);
            }
        }
    }
    let mut readers: HashMap<(usize, usize, &str), Vec<&Identity>> = HashMap::new();
    for (group, members) in &groups {
        let chosen = pick_two(members.iter().map(|&i| &*identities[i]));
        for identity in &chosen {
            wanted.entry(identity).or_default().insert(group.0);
        }
        readers.insert(*group, chosen);
    }
    let mut checked = check(pool, config, rows, wanted).await?;
    // A group whose readers disagree, or could not be checked, is checked identity by
    // identity.
    let mut recheck: HashMap<&Identity, BTreeSet<usize>> = HashMap::new();
    let mut by_scope: HashMap<(usize, usize, &str), Option<&Identity>> = HashMap::new();
    for (group, chosen) in &readers {
        let seen: Vec<Option<bool>> = chosen
            .iter()
            .map(|id| checked.visible.get(*id).map(|v| v.contains(&group.0)))
            .collect();
        match seen.as_slice() {
            [Some(a), rest @ ..] if rest.iter().all(|s| *s == Some(*a)) => {
                by_scope.insert(*group, a.then_some(chosen[0]));
            }
            _ => {
                if seen.iter().all(Option::is_some) {
                    violations.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        table = rows[group.0].change.table.as_deref().unwrap_or_default(),
                        "a scope-visibility table hides a row from some followers of its scope: checked per identity"
                    );
                }
                for &i in &groups[group] {
                    recheck.entry(&*identities[i]).or_default().insert(group.0);
                }
            }
        }
    }
    if !recheck.is_empty() {
        let more = check(pool, config, rows, recheck).await?;
        for (identity, visible) in more.visible {
            checked.visible.entry(identity).or_default().extend(visible);
        }
        for (role, rows) in more.data {
            checked.data.entry(role).or_default().extend(rows);
        }
    }
    // Connections that matched the same keys of a row and see the same thing share one item.
    let mut shared: HashMap<ItemKey, Arc<RowItem>> = HashMap::new();
    for (interest, identity) in interests.into_iter().zip(&identities) {
        let own = checked.visible.get(&**identity);
        let mut unchecked = BTreeSet::new();
        for (r, matched) in interest.rows {
            let row = &rows[r];
            // Who saw the row for this connection: a reader of its scope, or itself.
            let seen_by = match by_scope.get(&(r, matched[0], identity.role.as_str())) {
                Some(reader) => Some(*reader),
                None => own.map(|visible| visible.contains(&r).then_some(&**identity)),
            };
            let Some(seen_by) = seen_by else {
                unchecked.extend(matched.iter().map(|k| row.keys[*k].0.clone()));
                continue;
            };
            let data = seen_by.and_then(|reader| checked.data.get(reader.role.as_str())?.get(&r));
            // A scope key holds the row only while the row's value is the key's.
            let kept: Vec<usize> = match data {
                Some(data) => matched
                    .iter()
                    .copied()
                    .filter(|k| match &row.keys[*k].1 {
                        None => true,
                        Some((column, value)) => {
                            crate::feed::change::scope_value(&data[column.as_str()]).as_ref()
                                == Some(value)
                        }
                    })
                    .collect(),
                None => Vec::new(),
            };
            let (role, keys, row_data) = if kept.is_empty() {
                (None, matched, None)
            } else {
                (Some(identity.role.as_str()), kept, data)
            };
            let item = shared
                .entry((r, role, keys))
                .or_insert_with_key(|(_, _, keys)| {
                    let texts = keys.iter().map(|k| row.keys[*k].0.clone()).collect();
                    Arc::new(row.change.row_item(row.record, texts, row_data))
                })
                .clone();
            plan.per_row[r].push((interest.subscriber.clone(), item));
        }
        if !unchecked.is_empty() {
            plan.resyncs
                .push((interest.subscriber, unchecked.into_iter().collect()));
        }
    }
    Ok(plan)
}

/// Two distinct identities of `members` (one when there is only one), starting at a
/// place that moves with every call: over batches, every follower gets to be a reader.
fn pick_two<'a>(members: impl Iterator<Item = &'a Identity>) -> Vec<&'a Identity> {
    static TURN: AtomicU64 = AtomicU64::new(0);
    let distinct: Vec<&Identity> = members.collect::<BTreeSet<_>>().into_iter().collect();
    let start = TURN.fetch_add(1, Ordering::Relaxed) as usize % distinct.len().max(1);
    distinct
        .iter()
        .cycle()
        .skip(start)
        .take(distinct.len().min(2))
        .copied()
        .collect()
}

/// What makes two connections' items of a row the same: the row, the role whose view
/// of it is sent (`None` for a remove), and the keys matched.
type ItemKey<'a> = (usize, Option<&'a str>, Vec<usize>);

/// The answers of one batch's checks.
struct Checked {
    /// Per identity checked, the rows it may see; absent when its check failed.
    visible: HashMap<Identity, HashSet<usize>>,
    /// The rows' data, by role, then row: looked up for every connection, so by `&str`.
    data: HashMap<String, HashMap<usize, Value>>,
}

/// Checks every identity's rows, `visibility_batch` identities per statement and up to
/// `visibility_parallel` statements at once. A statement that fails (a policy slow past
/// the timeout, say) is retried one identity at a time, so that only the identities that
/// fail alone go unchecked.
async fn check(
    pool: &Pool,
    config: &Config,
    rows: &[BatchRow],
    wanted: HashMap<&Identity, BTreeSet<usize>>,
) -> Result<Checked, Error> {
    let tables: Vec<&str> = rows
        .iter()
        .map(|r| r.change.table.as_deref().unwrap_or_default())
        .collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.change.row_id.as_deref().unwrap_or_default())
        .collect();
    // Sorted by role: plans are made per role, so each role's are made once per statement.
    let mut wanted: Vec<(&Identity, BTreeSet<usize>)> = wanted.into_iter().collect();
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    let chunks: Vec<&[(&Identity, BTreeSet<usize>)]> =
        wanted.chunks(config.visibility_batch).collect();
    let mut answers = Vec::new();
    for group in chunks.chunks(config.visibility_parallel) {
        let calls = group
            .iter()
            .map(|chunk| check_chunk(pool, config, chunk, &tables, &ids));
        for result in futures_util::future::join_all(calls).await {
            answers.append(&mut result?);
        }
    }
    let mut checked = Checked {
        visible: HashMap::new(),
        data: HashMap::new(),
    };
    for answer in answers {
        if answer.failed {
            continue;
        }
        let visible = answer.rows.iter().map(|(r, _)| *r).collect();
        let role = checked
            .data
            .entry(answer.identity.role.clone())
            .or_default();
        for (r, data) in answer.rows {
            if let Some(data) = data {
                role.insert(r, data);
            }
        }
        checked.visible.insert(answer.identity, visible);
    }
    Ok(checked)
}

async fn check_chunk(
    pool: &Pool,
    config: &Config,
    chunk: &[(&Identity, BTreeSet<usize>)],
    tables: &[&str],
    ids: &[&str],
) -> Result<Vec<Answer>, Error> {
    match call(pool, config, chunk, tables, ids).await {
        Ok(answers) => Ok(answers),
        Err(error) if chunk.len() > 1 && is_statement_error(&error) => {
            let mut answers = Vec::new();
            for one in chunk.chunks(1) {
                match call(pool, config, one, tables, ids).await {
                    Ok(mut answer) => answers.append(&mut answer),
                    Err(error) if is_statement_error(&error) => {
                        tracing::warn!(role = %one[0].0.role, %error, "identity not checked");
                        answers.push(Answer::new(one[0].0, true));
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(answers)
        }
        Err(error) if is_statement_error(&error) => {
            tracing::warn!(%error, "identity not checked");
            Ok(chunk.iter().map(|(i, _)| Answer::new(i, true)).collect())
        }
        Err(error) => Err(error),
    }
}

/// One identity's answer from one statement.
struct Answer {
    identity: Identity,
    /// The rows it may see, each with its data when this answer carries it.
    rows: Vec<(usize, Option<Value>)>,
    failed: bool,
}

impl Answer {
    fn new(identity: &Identity, failed: bool) -> Answer {
        Answer {
            identity: identity.clone(),
            rows: Vec::new(),
            failed,
        }
    }
}

/// Whether an error came from the statement (a policy, the timeout) rather than from the
/// connection to the database: only the first is an identity's own.
fn is_statement_error(error: &Error) -> bool {
    error
        .downcast_ref::<tokio_postgres::Error>()
        .is_some_and(|e| e.as_db_error().is_some())
}

/// The transaction a check of many identities runs in: read-only and repeatable read (one
/// snapshot for every identity), with `visibility_timeout_ms` as its statement timeout;
/// the role and claims each identity sets are gone at its end.
pub(super) async fn checking_transaction<'a>(
    client: &'a mut deadpool_postgres::Object,
    config: &Config,
) -> Result<deadpool_postgres::Transaction<'a>, Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let timeout = format!("{}ms", config.visibility_timeout.as_millis());
    tx.execute(
        "SELECT set_config('statement_timeout', $1, true)",
        &[&timeout],
    )
    .await?;
    Ok(tx)
}

const VISIBLE_ROWS: &str =
    "SELECT identity, row_index, data, error FROM rowsync.visible_rows($1, $2, $3)";

/// Runs `rowsync.visible_rows` for `chunk` in a read-only transaction of its own: one
/// snapshot for every identity, a statement timeout, and role and claims gone at commit.
async fn call(
    pool: &Pool,
    config: &Config,
    chunk: &[(&Identity, BTreeSet<usize>)],
    tables: &[&str],
    ids: &[&str],
) -> Result<Vec<Answer>, Error> {
    let identities: Vec<Value> = chunk
        .iter()
        .map(|(identity, rows)| {
            json!({"role": identity.role, "claims": identity.claims, "rows": rows})
        })
        .collect();
    let mut client = pool.get().await?;
    let tx = checking_transaction(&mut client, config).await?;
    let statement = tx.prepare_cached(VISIBLE_ROWS).await?;
    let result = tx
        .query(&statement, &[&Value::Array(identities), &tables, &ids])
        .await?;
    tx.commit().await?;
    let mut answers: Vec<Answer> = chunk
        .iter()
        .map(|(identity, _)| Answer::new(identity, false))
        .collect();
    for row in result {
        let i: i32 = row.get(0);
        let Some(answer) = answers.get_mut(i as usize) else {
            continue;
        };
        let error: Option<String> = row.get(3);
        if let Some(error) = error {
            tracing::warn!(role = %answer.identity.role, %error, "a policy raised: identity not checked");
            answer.failed = true;
            continue;
        }
        let r: Option<i32> = row.get(1);
        if let Some(r) = r {
            answer.rows.push((r as usize, row.get(2)));
        }
    }
    Ok(answers)
}
