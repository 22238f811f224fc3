//! A transaction: ops that apply all or none, with the inverse transaction that undoes them.

use crate::apply::{apply_op, Outcome, Skip};
use crate::error::{ApplyError, OpError};
use crate::op::Op;
use crate::Row;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Client-chosen UUID; a retried id returns the stored result instead of applying twice.
    pub id: Option<String>,
    pub ops: Vec<Op>,
}

/// Rows keyed by table and id; `None` marks a row known not to exist.
pub type RowKey = (String, String);
pub type Rows = BTreeMap<RowKey, Option<Row>>;

#[derive(Debug, Clone, PartialEq)]
pub struct TxOutcome {
    /// Undoes the transaction: the ops' inverses, last op first.
    pub inverse: Vec<Op>,
    pub skipped: Vec<Skip>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxError {
    pub index: usize,
    pub error: ApplyError,
}

impl Transaction {
    /// Parses `{"id": "<uuid>", "ops": [...]}`, naming the op and field of the first error.
    pub fn parse(value: &Value, max_ops: usize) -> Result<Transaction, OpError> {
        let obj = value
            .as_object()
            .ok_or_else(|| OpError::new("transaction", "must be a JSON object"))?;
        if let Some(field) = obj.keys().find(|k| *k != "id" && *k != "ops") {
            return Err(OpError::new(field, "not a field of a transaction"));
        }
        let id = match obj.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_uuid(s) => Some(s.to_ascii_lowercase()),
            Some(_) => return Err(OpError::new("id", "must be a UUID")),
        };
        // An empty list applies nothing: it is the inverse of a transaction that changed
        // nothing, and an inverse must always be appliable.
        let ops = match obj.get("ops") {
            Some(Value::Array(ops)) => ops,
            _ => return Err(OpError::new("ops", "must be an array")),
        };
        if ops.len() > max_ops {
            return Err(OpError::new(
                "ops",
                format!("{} ops, the limit is {max_ops}", ops.len()),
            ));
        }
        let ops = ops
            .iter()
            .enumerate()
            .map(|(i, op)| Op::parse(op).map_err(|e| e.at(i)))
            .collect::<Result<_, _>>()?;
        Ok(Transaction { id, ops })
    }
}

/// Applies `ops` in order to `rows`, which must hold every row they touch. On error the
/// rows are left half-changed: callers apply to a copy or discard them.
pub fn apply_tx(rows: &mut Rows, ops: &[Op], now: &Value) -> Result<TxOutcome, TxError> {
    let mut inverse = Vec::new();
    let mut skipped = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let row = rows
            .entry((op.table.clone(), op.id.clone()))
            .or_insert(None);
        match apply_op(row, op, now).map_err(|error| TxError { index, error })? {
            Outcome::Applied { inverse: Some(inv) } => inverse.push(inv),
            Outcome::Applied { inverse: None } => {}
            Outcome::Skipped(reason) => skipped.push(Skip {
                index,
                table: op.table.clone(),
                id: op.id.clone(),
                key: op.action.key().cloned(),
                reason,
            }),
        }
    }
    inverse.reverse();
    Ok(TxOutcome { inverse, skipped })
}

/// Whether `s` is a UUID in its hyphenated text form (any case).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Which field a malformed transaction names is pinned by tests/vectors/parse.json.
    #[test]
    fn parses_and_limits() {
        let tx = json!({"id": "0B5E4F6A-1111-4222-8333-944455556666", "ops": [
            {"type":"delete","table":"t","id":"1"}
        ]});
        let parsed = Transaction::parse(&tx, 10).unwrap();
        assert_eq!(
            parsed.id.as_deref(),
            Some("0b5e4f6a-1111-4222-8333-944455556666")
        );
        assert_eq!(Transaction::parse(&tx, 0).unwrap_err().field, "ops");
    }
}
