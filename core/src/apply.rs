//! Applying one op to one row, and the op that undoes it.

use crate::error::ApplyError;
use crate::json::deep_eq;
use crate::key::FieldKey;
use crate::list;
use crate::op::{Action, Op};
use crate::{Row, VERSION_COLUMN};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The op applied; `inverse` undoes it (`None` when it changed nothing).
    Applied { inverse: Option<Op> },
    /// A guarded op found the row changed by someone else and left it alone.
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The key no longer holds the value the guard expects.
    Changed,
    /// The row is gone.
    Gone,
    /// The row was re-created meanwhile.
    Exists,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Changed => "changed",
            SkipReason::Gone => "gone",
            SkipReason::Exists => "exists",
        }
    }
}

/// A skipped op as reported to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub index: usize,
    pub table: String,
    pub id: String,
    pub key: Option<FieldKey>,
    pub reason: SkipReason,
}

impl Skip {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "index": self.index,
            "table": self.table,
            "id": self.id,
            "reason": self.reason.as_str(),
        });
        if let Some(key) = &self.key {
            v["key"] = key.to_json();
        }
        v
    }
}

/// Applies `op` to `row` (`None`: no such row). `now` is the transaction's timestamp.
pub fn apply_op(row: &mut Option<Row>, op: &Op, now: &Value) -> Result<Outcome, ApplyError> {
    if let Some(expected) = op.version {
        let current = row
            .as_ref()
            .and_then(|r| r.get(VERSION_COLUMN))
            .and_then(Value::as_i64);
        if row.is_none() {
            return Err(ApplyError::NotFound);
        }
        if current != Some(expected) {
            return Err(ApplyError::Conflict { expected, current });
        }
    }
    let inverse_of = |action: Action| Op {
        table: op.table.clone(),
        id: op.id.clone(),
        version: None,
        action,
    };
    match &op.action {
        Action::Create {
            value,
            expect_absent,
        } => {
            if row.is_some() {
                return if *expect_absent {
                    Ok(Outcome::Skipped(SkipReason::Exists))
                } else {
                    Err(ApplyError::AlreadyExists)
                };
            }
            // A row created by one transaction is written once, so it starts at version 1;
            // the inverse deletes it only while nobody else has changed it since.
            let mut created = value.clone();
            created.insert(VERSION_COLUMN.into(), json!(1));
            *row = Some(created);
            Ok(Outcome::Applied {
                inverse: Some(inverse_of(Action::Delete {
                    expect_version: Some(1),
                })),
            })
        }
        Action::Delete { expect_version } => {
            let Some(current) = row.as_ref() else {
                return match expect_version {
                    Some(_) => Ok(Outcome::Skipped(SkipReason::Gone)),
                    None => Err(ApplyError::NotFound),
                };
            };
            if let Some(v) = expect_version {
                if current.get(VERSION_COLUMN).and_then(Value::as_i64) != Some(*v) {
                    return Ok(Outcome::Skipped(SkipReason::Changed));
                }
            }
            let mut old = current.clone();
            old.remove(VERSION_COLUMN);
            *row = None;
            Ok(Outcome::Applied {
                inverse: Some(inverse_of(Action::Create {
                    value: old,
                    expect_absent: true,
                })),
            })
        }
        Action::Set { key, value, expect } => {
            let Some(r) = row.as_mut() else {
                return match expect {
                    Some(_) => Ok(Outcome::Skipped(SkipReason::Gone)),
                    None => Err(ApplyError::NotFound),
                };
            };
            if let Some(expected) = expect {
                if !deep_eq(key.get(r).unwrap_or(&Value::Null), expected) {
                    return Ok(Outcome::Skipped(SkipReason::Changed));
                }
            }
            Ok(Outcome::Applied {
                inverse: set(r, key, value.clone())?.map(inverse_of),
            })
        }
        Action::SetNow { key } => {
            let r = row.as_mut().ok_or(ApplyError::NotFound)?;
            Ok(Outcome::Applied {
                inverse: set(r, key, Some(now.clone()))?.map(inverse_of),
            })
        }
        Action::ListInsert {
            key,
            value,
            position,
        } => {
            let r = row.as_mut().ok_or(ApplyError::NotFound)?;
            let mut items = list_at(r, key)?;
            let before = items.clone();
            let old_index = list::insert(&mut items, value.clone(), position);
            // By value, as everywhere: moving `1.0` to where `1` already is changes nothing
            // (the JavaScript port cannot tell them apart either).
            if deep_eq(&Value::Array(items.clone()), &Value::Array(before.clone())) {
                return Ok(Outcome::Applied { inverse: None });
            }
            // A list that was null or missing is restored as it was, not as `[]`.
            if matches!(key.get(r), None | Some(Value::Null)) {
                return Ok(Outcome::Applied {
                    inverse: set(r, key, Some(Value::Array(items)))?.map(inverse_of),
                });
            }
            let action = match old_index {
                None => Action::ListRemove {
                    key: key.clone(),
                    value: value.clone(),
                },
                Some(i) => reinsert(key, &before, i),
            };
            Ok(Outcome::Applied {
                inverse: list_inverse(r, key, before, items, action)?.map(inverse_of),
            })
        }
        Action::ListRemove { key, value } => {
            let r = row.as_mut().ok_or(ApplyError::NotFound)?;
            let mut items = list_at(r, key)?;
            let before = items.clone();
            let Some(old_index) = list::remove(&mut items, value) else {
                return Ok(Outcome::Applied { inverse: None });
            };
            let action = reinsert(key, &before, old_index);
            Ok(Outcome::Applied {
                inverse: list_inverse(r, key, before, items, action)?.map(inverse_of),
            })
        }
    }
}

/// The listInsert that puts `before[index]` back where it was, spelled as it was (`2.0`,
/// not an op's `2`).
fn reinsert(key: &FieldKey, before: &[Value], index: usize) -> Action {
    Action::ListInsert {
        key: key.clone(),
        value: before[index].clone(),
        position: list::position_of(before, index),
    }
}

/// Writes the list op's result `items` and returns `action`, the list op that undoes it,
/// when that restores `before` exactly. It does not when the list held equal copies
/// (plain SQL can write them): an anchor or a removed value then names more than one
/// place, and the whole list is restored instead.
fn list_inverse(
    row: &mut Row,
    key: &FieldKey,
    before: Vec<Value>,
    items: Vec<Value>,
    action: Action,
) -> Result<Option<Action>, ApplyError> {
    let mut trial = items.clone();
    match &action {
        Action::ListInsert {
            value, position, ..
        } => {
            list::insert(&mut trial, value.clone(), position);
        }
        Action::ListRemove { value, .. } => {
            list::remove(&mut trial, value);
        }
        _ => unreachable!("a list op's inverse is a list op"),
    }
    if !deep_eq(&Value::Array(trial), &Value::Array(before)) {
        return set(row, key, Some(Value::Array(items)));
    }
    key.set(row, Value::Array(items))?;
    Ok(Some(action))
}

/// Writes or removes the value at `key`; returns the action that restores the old value,
/// guarded by the new one, or `None` when nothing changed. A write through objects that
/// did not exist (`meta.new.x` with no `meta.new`) is restored at the first of them, so
/// that undoing it removes what it created and not only its last name.
fn set(row: &mut Row, key: &FieldKey, value: Option<Value>) -> Result<Option<Action>, ApplyError> {
    let old = key.get(row).cloned();
    let unchanged = match (&old, &value) {
        (None, None) => true,
        (Some(o), Some(v)) => deep_eq(o, v),
        (Some(o), None) => key.path.is_empty() && o.is_null(),
        (None, Some(_)) => false,
    };
    if unchanged {
        return Ok(None);
    }
    let (restored, old) = match (&value, created_at(row, key)) {
        (Some(_), Some(first)) => {
            let old = first.get(row).cloned();
            (first, old)
        }
        _ => (key.clone(), old),
    };
    match &value {
        Some(v) => key.set(row, v.clone())?,
        None => key.remove(row)?,
    }
    let written = restored.get(row).cloned().unwrap_or(Value::Null);
    let restore = match old {
        Some(o) => Some(o),
        None if restored.path.is_empty() => Some(Value::Null),
        None => None,
    };
    Ok(Some(Action::Set {
        key: restored,
        value: restore,
        expect: Some(written),
    }))
}

/// The shortest prefix of `key` that writing at `key` would create: the first object on
/// its path that is missing or null. `None` when every object on the path exists.
fn created_at(row: &Row, key: &FieldKey) -> Option<FieldKey> {
    let mut prefix = FieldKey::column(&key.column);
    for name in &key.path {
        match prefix.get(row) {
            Some(Value::Object(_)) => prefix.path.push(name.clone()),
            _ => return Some(prefix),
        }
    }
    None
}

fn list_at(row: &Row, key: &FieldKey) -> Result<Vec<Value>, ApplyError> {
    match key.get(row) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(ApplyError::NotAList {
            key: key.to_string(),
        }),
    }
}
