//! `rowsync._get`: the rows behind a list of pointers, read as the caller. A row that does
//! not exist and a row the caller may not see both come back as `null`.

use crate::catalog::Context;
use crate::failure::Failure;
use crate::sql::json_rows;
use crate::values;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use rowsync_core::OpError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub fn run(pointers: &Value) -> Result<Value, Failure> {
    Spi::connect_mut(|client| get(client, pointers))
}

fn get(client: &mut SpiClient<'_>, pointers: &Value) -> Result<Value, Failure> {
    // The tables' names from the pointers that parse, so that one statement reads the
    // limit and the tables; parse then checks every pointer against the limit.
    let names: BTreeSet<String> = pointers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(pair)
        .map(|(table, _)| table)
        .collect();
    let context = Context::read(client, names.into_iter().collect());
    let pointers = parse(pointers, context.max_ops)?;
    let mut tables = BTreeMap::new();
    for (table, _) in &pointers {
        if !tables.contains_key(table) {
            let synced = context
                .table(client, table)
                .ok_or_else(|| Failure::NotSynced {
                    table: table.clone(),
                })?;
            tables.insert(table.clone(), synced);
        }
    }
    let mut found: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (name, table) in &tables {
        let ids: Vec<String> = pointers
            .iter()
            .filter(|(t, _)| t == name)
            .filter_map(|(_, id)| values::canonical_id(&table.pk_type, id))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT jsonb_build_array(t.{pk}::text, to_jsonb(t)) FROM {q} AS t \
             WHERE t.{pk} = ANY($1::text[]::{pk_type}[])",
            q = table.qualified,
            pk = table.quoted_pk(),
            pk_type = table.pk_type,
        );
        for pair in json_rows(client, &sql, &[ids.into()]) {
            if let Some(id) = pair[0].as_str() {
                found.insert((name.clone(), id.to_string()), pair[1].clone());
            }
        }
    }
    let rows: Vec<Value> = pointers
        .into_iter()
        .map(|(table, id)| {
            let canonical = tables
                .get(&table)
                .and_then(|t| values::canonical_id(&t.pk_type, &id));
            let row = canonical
                .and_then(|c| found.get(&(table.clone(), c)).cloned())
                .unwrap_or(Value::Null);
            json!({ "table": table, "id": id, "row": row })
        })
        .collect();
    Ok(json!({ "rows": rows }))
}

/// Pointers are `{"table": …, "id": …}` objects or `"table:id"` strings.
fn parse(pointers: &Value, max: usize) -> Result<Vec<(String, String)>, Failure> {
    let invalid = |field: &str, message: &str| Failure::InvalidOp(OpError::new(field, message));
    let items = pointers
        .as_array()
        .ok_or_else(|| invalid("pointers", "must be an array"))?;
    if items.len() > max {
        return Err(invalid(
            "pointers",
            &format!("{} pointers, the limit is {max}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            pair(item).ok_or_else(|| {
                Failure::InvalidOp(OpError::new(
                    &format!("pointers[{i}]"),
                    "must be \"table:id\" or {\"table\": …, \"id\": …}",
                ))
            })
        })
        .collect()
}

/// A pointer's table and id, when it is well formed.
fn pair(item: &Value) -> Option<(String, String)> {
    let (table, id) = match item {
        Value::String(s) => s
            .split_once(':')
            .map(|(t, id)| (t.to_string(), id.to_string()))?,
        Value::Object(o) => match (o.get("table"), o.get("id")) {
            (Some(Value::String(t)), Some(Value::String(id))) => (t.clone(), id.clone()),
            (Some(Value::String(t)), Some(Value::Number(n))) => (t.clone(), n.to_string()),
            _ => return None,
        },
        _ => return None,
    };
    (!table.is_empty() && !id.is_empty()).then_some((table, id))
}
