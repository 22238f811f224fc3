//! `rowsync._apply`: validate, lock and read every touched row, apply the ops in memory
//! with rowsync-core, then write each changed row once.

use crate::catalog::{Context, SyncedTable};
use crate::failure::Failure;
use crate::jsonb::Jsonb;
use crate::sql::{first_column, first_column_planned_now, json_row, json_rows, raise};
use crate::values;
use pgrx::prelude::*;
use pgrx::spi::{quote_identifier, SpiClient};
use rowsync_core::{
    apply_tx, Action, ApplyError, Op, OpError, Row, RowKey, Rows, Transaction, VERSION_COLUMN,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn run(tx: &Value) -> Result<Value, Failure> {
    Spi::connect_mut(|client| {
        let mut claimed = None;
        let result = apply(client, tx, &mut claimed);
        // `rowsync.apply` raises every failure, which undoes the claim with the rest; a
        // direct caller of `_apply` gets the failure as a value, and keeps no claim.
        if let (Err(_), Some(id)) = (&result, claimed) {
            first_column_planned_now::<bool>(
                client,
                "DELETE FROM rowsync.applied WHERE tx_id = $1::pg_catalog.uuid RETURNING true",
                &[id.into()],
            );
        }
        result
    })
}

fn apply(
    client: &mut SpiClient<'_>,
    tx_json: &Value,
    claimed: &mut Option<String>,
) -> Result<Value, Failure> {
    // The tables' names straight from the JSON, so that one statement reads the limit
    // and the tables before parsing; a name that is not a string fails the parse.
    let names: BTreeSet<String> = tx_json
        .get("ops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|op| Some(op.get("table")?.as_str()?.to_string()))
        .collect();
    let context = Context::read(client, names.into_iter().collect());
    let tx = Transaction::parse(tx_json, context.max_ops).map_err(Failure::InvalidOp)?;
    if let Some(id) = &tx.id {
        match claim(client, id) {
            Ok(()) => *claimed = Some(id.clone()),
            Err(stored) => return Ok(stored),
        }
    }
    let tables = resolve_tables(client, &context, &tx.ops)?;
    let ops = validate(tx.ops, &tables)?;

    // Lock every touched row in one fixed order, so that two transactions touching the
    // same rows wait for each other instead of deadlocking.
    let mut before: Rows = ops
        .iter()
        .map(|op| ((op.table.clone(), op.id.clone()), None))
        .collect();
    for ((table, id), row) in before.iter_mut() {
        // A row only created needs no lock (nor UPDATE privilege): the insert itself
        // refuses a taken id.
        let only_created = ops
            .iter()
            .filter(|op| op.table == *table && op.id == *id)
            .all(|op| matches!(op.action, Action::Create { .. }));
        let sql = tables[table].select_row_sql(if only_created { "" } else { "FOR UPDATE" });
        *row = json_row(client, &sql, &[id.as_str().into()]).and_then(into_row);
    }
    let now = if ops
        .iter()
        .any(|op| matches!(op.action, Action::SetNow { .. }))
    {
        json_row(client, "SELECT to_jsonb(now())", &[]).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let mut after = before.clone();
    let outcome = match apply_tx(&mut after, &ops, &now) {
        Ok(outcome) => outcome,
        Err(e) => {
            let op = &ops[e.index];
            // Locking hides rows that update policies exclude. If the caller can still
            // see the row, saying "denied" reveals nothing it does not know.
            if e.error == ApplyError::NotFound {
                let sql = tables[&op.table].select_row_sql("");
                if json_row(client, &sql, &[op.id.as_str().into()]).is_some() {
                    return Err(Failure::Denied {
                        index: e.index,
                        table: op.table.clone(),
                        id: op.id.clone(),
                    });
                }
            }
            return Err(Failure::from_apply(e.index, &op.table, &op.id, e.error));
        }
    };

    // Everything rowsync refuses has been refused by now. What follows can only fail in
    // Postgres (constraints, row-level security), which aborts the whole transaction.
    // The capture trigger credits the changes to the transaction id while the writes run,
    // and to nothing after: plain SQL later in the same Postgres transaction is not it.
    let credit = tx.id.as_deref().map(crate::capture::credit_to);
    crate::capture::take_last_cursor();
    let skipped: BTreeSet<usize> = outcome.skipped.iter().map(|s| s.index).collect();
    let recreated: BTreeSet<RowKey> = ops
        .iter()
        .enumerate()
        .filter(|(i, op)| matches!(op.action, Action::Delete { .. }) && !skipped.contains(i))
        .map(|(_, op)| (op.table.clone(), op.id.clone()))
        .collect();
    let mut rows = Vec::new();
    let mut stored = Rows::new();
    let mut wrote = false;
    for (key, post) in &after {
        let table = &tables[&key.0];
        let pre = &before[key];
        let create_index = ops.iter().rposition(|op| {
            op.table == key.0 && op.id == key.1 && matches!(op.action, Action::Create { .. })
        });
        let (row, changed) = write(
            client,
            table,
            &key.1,
            pre,
            post,
            recreated.contains(key),
            create_index,
        );
        wrote |= changed;
        stored.insert(key.clone(), row.clone());
        rows.push(json!({
            "table": key.0,
            "id": key.1,
            "version": row.as_ref().and_then(|r| r.get(VERSION_COLUMN)).cloned(),
            "row": row.map(Value::Object),
        }));
    }
    drop(credit);
    // Not from each write's RETURNING: AFTER triggers and foreign-key cascades log their
    // changes when each statement ends.
    let cursor = match crate::capture::take_last_cursor() {
        Some(cursor) if wrote => Value::from(cursor),
        _ => Value::Null,
    };
    let inverse = guard_with_stored(outcome.inverse, &stored);
    let result = json!({
        "id": tx.id,
        "rows": rows,
        "inverse": inverse.iter().map(Op::to_json).collect::<Vec<_>>(),
        "skipped": outcome.skipped.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "cursor": cursor,
    });
    if let Some(id) = claimed {
        remember(client, id, &result);
    }
    Ok(result)
}

/// Guards undo with what Postgres stored, not what the client sent: `"2030-01-01 10:00"`
/// is stored as `"2030-01-01T10:00:00+00:00"`. Only the inverse of each key's last write
/// (the first in the inverse) compares against the stored row; earlier ones compare
/// against values the undo itself writes.
fn guard_with_stored(mut inverse: Vec<Op>, stored: &Rows) -> Vec<Op> {
    let mut seen = BTreeSet::new();
    for op in inverse.iter_mut() {
        let (table, id) = (op.table.clone(), op.id.clone());
        if let Action::Set {
            key,
            expect: Some(expect),
            ..
        } = &mut op.action
        {
            if seen.insert((table.clone(), id.clone(), key.clone())) {
                if let Some(Some(row)) = stored.get(&(table, id)) {
                    *expect = key.get(row).cloned().unwrap_or(Value::Null);
                }
            }
        }
    }
    inverse
}

fn resolve_tables(
    client: &mut SpiClient<'_>,
    context: &Context,
    ops: &[Op],
) -> Result<BTreeMap<String, std::rc::Rc<SyncedTable>>, Failure> {
    let mut tables = BTreeMap::new();
    for op in ops {
        if !tables.contains_key(&op.table) {
            let table = context
                .table(client, &op.table)
                .ok_or_else(|| Failure::NotSynced {
                    table: op.table.clone(),
                })?;
            tables.insert(op.table.clone(), table);
        }
    }
    Ok(tables)
}

/// Checks every op against its table's columns and key type. Returns the ops with the
/// primary key filled into `create` values, so the row in memory is the row stored.
fn validate(
    mut ops: Vec<Op>,
    tables: &BTreeMap<String, std::rc::Rc<SyncedTable>>,
) -> Result<Vec<Op>, Failure> {
    for (index, op) in ops.iter_mut().enumerate() {
        let table = &tables[&op.table];
        let invalid = |field: &str, message: String| {
            Failure::InvalidOp(OpError::new(field, message).at(index))
        };
        match values::canonical_id(&table.pk_type, &op.id) {
            Some(id) => op.id = id,
            None => return Err(invalid("id", format!("not a valid {} key", table.pk_type))),
        }
        let column = |name: &str| {
            table
                .columns
                .get(name)
                .ok_or_else(|| Failure::UnknownColumn {
                    index,
                    table: op.table.clone(),
                    column: name.to_string(),
                })
        };
        let wrong = |key: &str, message: String| Failure::WrongType {
            index,
            key: key.to_string(),
            message,
        };
        match &mut op.action {
            Action::Create { value, .. } => {
                for (name, v) in value.iter() {
                    if name == VERSION_COLUMN {
                        continue;
                    }
                    let col = column(name)?;
                    if *name == table.pk && !id_equals(v, &table.pk_type, &op.id) {
                        return Err(invalid(
                            "value",
                            format!("the primary key \"{name}\" must equal the op's id"),
                        ));
                    }
                    values::check(col, v).map_err(|e| wrong(name, format!("expected {e}")))?;
                }
                value
                    .entry(table.pk.clone())
                    .or_insert_with(|| Value::String(op.id.clone()));
            }
            Action::Delete { .. } => {}
            action => {
                let action = &*action;
                let Some(key) = action.key() else { continue };
                let col = column(&key.column)?;
                let key_name = key.to_string();
                if key.column == table.pk {
                    return Err(invalid("key", "the primary key cannot be changed".into()));
                }
                if !key.path.is_empty() && !col.is_json() {
                    return Err(wrong(
                        &key_name,
                        format!(
                            "a path needs a json or jsonb column, \"{}\" is {}",
                            key.column, col.type_name
                        ),
                    ));
                }
                let top_level = key.path.is_empty();
                match action {
                    Action::Set { value: Some(v), .. } if top_level => values::check(col, v)
                        .map_err(|e| wrong(&key_name, format!("expected {e}")))?,
                    Action::SetNow { .. }
                        if top_level && !matches!(col.category, 'D' | 'S') && !col.is_json() =>
                    {
                        return Err(wrong(
                            &key_name,
                            format!(
                                "set-now needs a date/time, text or json column, \"{}\" is {}",
                                key.column, col.type_name
                            ),
                        ));
                    }
                    Action::ListInsert { value, .. } | Action::ListRemove { value, .. }
                        if top_level =>
                    {
                        if !col.is_array() && !col.is_json() {
                            return Err(wrong(
                                &key_name,
                                format!(
                                    "a list op needs an array or json column, \"{}\" is {}",
                                    key.column, col.type_name
                                ),
                            ));
                        }
                        values::check(col, &Value::Array(vec![value.clone()]))
                            .map_err(|e| wrong(&key_name, format!("expected {e}")))?;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(ops)
}

/// Whether a key value in a `create` names the op's (canonical) id.
fn id_equals(value: &Value, pk_type: &str, id: &str) -> bool {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    values::canonical_id(pk_type, &text).as_deref() == Some(id)
}

fn into_row(value: Value) -> Option<Row> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Writes one row's change with one statement (two when a delete and a create of the
/// same id meet in one transaction). Returns the row as stored, and whether it wrote.
fn write(
    client: &mut SpiClient<'_>,
    table: &SyncedTable,
    id: &str,
    pre: &Option<Row>,
    post: &Option<Row>,
    recreated: bool,
    create_index: Option<usize>,
) -> (Option<Row>, bool) {
    let index = create_index.unwrap_or(0);
    match (pre, post) {
        (None, None) => (None, false),
        (None, Some(new)) => (Some(insert(client, table, id, new, index)), true),
        (Some(_), None) => {
            delete(client, table, id);
            (None, true)
        }
        (Some(_), Some(new)) if recreated => {
            delete(client, table, id);
            (Some(insert(client, table, id, new, index)), true)
        }
        (Some(old), Some(new)) => {
            let changed: Row = new
                .iter()
                .filter(|(k, v)| {
                    k.as_str() != VERSION_COLUMN
                        && !old
                            .get(*k)
                            .is_some_and(|o| rowsync_core::json::deep_eq(o, v))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if changed.is_empty() {
                return (Some(old.clone()), false);
            }
            (Some(update(client, table, id, changed)), true)
        }
    }
}

fn column_list(row: &Row) -> Vec<String> {
    row.keys()
        .filter(|k| k.as_str() != VERSION_COLUMN)
        .map(quote_identifier)
        .collect()
}

fn insert(
    client: &mut SpiClient<'_>,
    table: &SyncedTable,
    id: &str,
    row: &Row,
    index: usize,
) -> Row {
    let columns = column_list(row).join(", ");
    let sql = format!(
        "INSERT INTO {q} AS t ({columns}) SELECT {columns} FROM jsonb_populate_record(NULL::{q}, $1) \
         ON CONFLICT ({pk}) DO NOTHING RETURNING to_jsonb(t)",
        q = table.qualified,
        pk = table.quoted_pk(),
    );
    let args = [Jsonb(Value::Object(row.clone())).into()];
    match json_row(client, &sql, &args).and_then(into_row) {
        Some(stored) => stored,
        // Word for word what a visible taken id gets (Failure::AlreadyExists), so that
        // the answer does not tell a hidden row from a visible one.
        None => raise(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("row {}:{id} already exists", table.name),
            format!("op {index}"),
            "create rows with fresh ids (UUIDs)",
        ),
    }
}

fn update(client: &mut SpiClient<'_>, table: &SyncedTable, id: &str, changed: Row) -> Row {
    let set: Vec<String> = column_list(&changed)
        .into_iter()
        .map(|c| format!("{c} = r.{c}"))
        .collect();
    let sql = format!(
        "UPDATE {q} AS t SET {set} FROM jsonb_populate_record(NULL::{q}, $2) AS r \
         WHERE t.{pk} = $1::{pk_type} RETURNING to_jsonb(t)",
        q = table.qualified,
        set = set.join(", "),
        pk = table.quoted_pk(),
        pk_type = table.pk_type,
    );
    let args = [id.into(), Jsonb(Value::Object(changed)).into()];
    json_row(client, &sql, &args)
        .and_then(into_row)
        .unwrap_or_else(|| denied(table, id, "update"))
}

fn delete(client: &mut SpiClient<'_>, table: &SyncedTable, id: &str) {
    let sql = format!(
        "DELETE FROM {q} AS t WHERE t.{pk} = $1::{pk_type} RETURNING to_jsonb(true)",
        q = table.qualified,
        pk = table.quoted_pk(),
        pk_type = table.pk_type,
    );
    if json_rows(client, &sql, &[id.into()]).is_empty() {
        denied(table, id, "delete");
    }
}

/// The row was visible and locked, yet the statement touched nothing: a policy for this
/// command hides it. The caller could see the row, so saying so reveals nothing.
fn denied(table: &SyncedTable, id: &str, command: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied to {command} row {}:{id}", table.name),
        format!(
            "a row-level security policy for {command} on {} excludes it",
            table.name
        ),
        "check the table's policies",
    )
}

/// Claims a transaction id before anything else, so that it applies once: an insert
/// into its unique key, which waits for a call applying the same id right now. Returns
/// the result stored for an id applied before. Neither this nor [`remember`] leaves the
/// planner a choice of scan: a kept plan for a lookup by id, made when the table was
/// small, scanned it whole at every call.
fn claim(client: &mut SpiClient<'_>, id: &str) -> Result<(), Value> {
    let claimed = first_column::<bool>(
        client,
        "INSERT INTO rowsync.applied (tx_id, result) VALUES ($1::pg_catalog.uuid, 'null') \
         ON CONFLICT (tx_id) DO NOTHING RETURNING true",
        &[id.into()],
    );
    if !claimed.is_empty() {
        return Ok(());
    }
    let stored = first_column_planned_now::<Jsonb>(
        client,
        "SELECT result FROM rowsync.applied WHERE tx_id = $1::pg_catalog.uuid",
        &[id.into()],
    );
    match stored.into_iter().next() {
        Some(stored) => Err(stored.0),
        None => raise(
            PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
            format!("transaction id {id} is already taken"),
            "a transaction with this id was applied by someone else".into(),
            "if this is a retry of your own transaction, retry as the same user; otherwise use a fresh id",
        ),
    }
}

/// Stores the result on this call's claim, found by its unique key.
fn remember(client: &mut SpiClient<'_>, id: &str, result: &Value) {
    first_column::<bool>(
        client,
        "INSERT INTO rowsync.applied (tx_id, result) VALUES ($1::pg_catalog.uuid, $2) \
         ON CONFLICT (tx_id) DO UPDATE SET result = EXCLUDED.result RETURNING true",
        &[id.into(), Jsonb(result.clone()).into()],
    );
}
