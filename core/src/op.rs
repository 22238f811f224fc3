//! The operations and their wire format.

use crate::error::OpError;
use crate::key::FieldKey;
use crate::Row;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub table: String,
    /// The primary key's text form.
    pub id: String,
    /// The version the client based the op on: another version fails the transaction.
    pub version: Option<i64>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `value: None` removes the key (`"remove": true` on the wire). `expect` guards undo:
    /// the op is skipped unless the key still holds that value (absent counts as null).
    Set {
        key: FieldKey,
        value: Option<Value>,
        expect: Option<Value>,
    },
    SetNow {
        key: FieldKey,
    },
    ListInsert {
        key: FieldKey,
        value: Value,
        position: Position,
    },
    ListRemove {
        key: FieldKey,
        value: Value,
    },
    /// `expect_absent` (undo of a delete) skips instead of failing when the id is taken.
    Create {
        value: Row,
        expect_absent: bool,
    },
    /// `expect_version` (undo of a create) skips unless the row is still at that version.
    Delete {
        expect_version: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    Append,
    Prepend,
    Before(Value),
    After(Value),
}

impl Action {
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::Set { .. } => "set",
            Action::SetNow { .. } => "set-now",
            Action::ListInsert { .. } => "listInsert",
            Action::ListRemove { .. } => "listRemove",
            Action::Create { .. } => "create",
            Action::Delete { .. } => "delete",
        }
    }

    pub fn key(&self) -> Option<&FieldKey> {
        match self {
            Action::Set { key, .. }
            | Action::SetNow { key }
            | Action::ListInsert { key, .. }
            | Action::ListRemove { key, .. } => Some(key),
            Action::Create { .. } | Action::Delete { .. } => None,
        }
    }
}

impl Op {
    pub fn parse(value: &Value) -> Result<Op, OpError> {
        let obj = value
            .as_object()
            .ok_or_else(|| OpError::new("op", "an op must be a JSON object"))?;
        let type_name = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| OpError::new("type", "missing or not a string"))?;
        let allowed: &[&str] = match type_name {
            "set" => &["key", "value", "remove", "expect"],
            "set-now" => &["key"],
            "listInsert" => &["key", "value", "position"],
            "listRemove" => &["key", "value"],
            "create" => &["value", "expect_absent"],
            "delete" => &["expect_version"],
            other => {
                return Err(OpError::new(
                    "type",
                    format!("unknown op type \"{other}\" (set, set-now, listInsert, listRemove, create, delete)"),
                ))
            }
        };
        for field in obj.keys() {
            let common = ["type", "table", "id", "version"].contains(&field.as_str());
            if !common && !allowed.contains(&field.as_str()) {
                return Err(OpError::new(
                    field,
                    format!("not a field of a \"{type_name}\" op"),
                ));
            }
        }
        let table = match obj.get("table") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(OpError::new("table", "missing or not a non-empty string")),
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_i64() => n.to_string(),
            _ => {
                return Err(OpError::new(
                    "id",
                    "missing, or not a non-empty string or an integer",
                ))
            }
        };
        let version = optional_int(obj, "version")?;
        let key = || {
            obj.get("key")
                .ok_or_else(|| OpError::new("key", "missing"))
                .and_then(FieldKey::parse)
        };
        let value = || {
            obj.get("value")
                .cloned()
                .ok_or_else(|| OpError::new("value", "missing"))
        };
        let action = match type_name {
            "set" => {
                let key = key()?;
                let remove = match obj.get("remove") {
                    None | Some(Value::Bool(false)) => false,
                    Some(Value::Bool(true)) => true,
                    Some(_) => return Err(OpError::new("remove", "must be a boolean")),
                };
                let value = match (remove, obj.get("value")) {
                    (true, None) => None,
                    (true, Some(_)) => {
                        return Err(OpError::new("value", "a removing set takes no value"))
                    }
                    (false, Some(v)) => Some(v.clone()),
                    (false, None) => return Err(OpError::new("value", "missing")),
                };
                Action::Set {
                    key,
                    value,
                    expect: obj.get("expect").cloned(),
                }
            }
            "set-now" => Action::SetNow { key: key()? },
            "listInsert" => Action::ListInsert {
                key: key()?,
                value: value()?,
                position: Position::parse(obj.get("position"))?,
            },
            "listRemove" => Action::ListRemove {
                key: key()?,
                value: value()?,
            },
            "create" => {
                if version.is_some() {
                    return Err(OpError::new("version", "a create has no version to check"));
                }
                let value = match obj.get("value") {
                    Some(Value::Object(map)) => map.clone(),
                    _ => return Err(OpError::new("value", "must be an object of columns")),
                };
                let expect_absent = match obj.get("expect_absent") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(OpError::new("expect_absent", "must be a boolean")),
                };
                Action::Create {
                    value,
                    expect_absent,
                }
            }
            _ => Action::Delete {
                expect_version: optional_int(obj, "expect_version")?,
            },
        };
        if let Some(key) = action.key() {
            if key.column == crate::VERSION_COLUMN {
                return Err(OpError::new("key", "version is managed by rowsync"));
            }
        }
        Ok(Op {
            table,
            id,
            version,
            action,
        })
    }

    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), json!(self.action.type_name()));
        obj.insert("table".into(), json!(self.table));
        obj.insert("id".into(), json!(self.id));
        if let Some(v) = self.version {
            obj.insert("version".into(), json!(v));
        }
        if let Some(key) = self.action.key() {
            obj.insert("key".into(), key.to_json());
        }
        match &self.action {
            Action::Set { value, expect, .. } => {
                match value {
                    Some(v) => obj.insert("value".into(), v.clone()),
                    None => obj.insert("remove".into(), json!(true)),
                };
                if let Some(e) = expect {
                    obj.insert("expect".into(), e.clone());
                }
            }
            Action::SetNow { .. } => {}
            Action::ListInsert {
                value, position, ..
            } => {
                obj.insert("value".into(), value.clone());
                obj.insert("position".into(), position.to_json());
            }
            Action::ListRemove { value, .. } => {
                obj.insert("value".into(), value.clone());
            }
            Action::Create {
                value,
                expect_absent,
            } => {
                obj.insert("value".into(), Value::Object(value.clone()));
                if *expect_absent {
                    obj.insert("expect_absent".into(), json!(true));
                }
            }
            Action::Delete { expect_version } => {
                if let Some(v) = expect_version {
                    obj.insert("expect_version".into(), json!(v));
                }
            }
        }
        Value::Object(obj)
    }
}

impl Position {
    fn parse(value: Option<&Value>) -> Result<Position, OpError> {
        let bad = || {
            OpError::new(
                "position",
                "must be \"append\", \"prepend\", {\"before\": v} or {\"after\": v}",
            )
        };
        match value {
            None => Ok(Position::Append),
            Some(Value::String(s)) if s == "append" => Ok(Position::Append),
            Some(Value::String(s)) if s == "prepend" => Ok(Position::Prepend),
            Some(Value::Object(map)) if map.len() == 1 => {
                if let Some(anchor) = map.get("before") {
                    Ok(Position::Before(anchor.clone()))
                } else if let Some(anchor) = map.get("after") {
                    Ok(Position::After(anchor.clone()))
                } else {
                    Err(bad())
                }
            }
            Some(_) => Err(bad()),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Position::Append => json!("append"),
            Position::Prepend => json!("prepend"),
            Position::Before(v) => json!({ "before": v }),
            Position::After(v) => json!({ "after": v }),
        }
    }
}

fn optional_int(obj: &Map<String, Value>, field: &str) -> Result<Option<i64>, OpError> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 0 => Ok(Some(v)),
            _ => Err(OpError::new(field, "must be a non-negative integer")),
        },
        Some(_) => Err(OpError::new(field, "must be a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let ops = [
            json!({"type":"set","table":"tasks","id":"1","key":"status","value":"done","version":3}),
            json!({"type":"set","table":"tasks","id":"1","key":"meta.color","remove":true,"expect":"red"}),
            json!({"type":"set-now","table":"tasks","id":"1","key":"updated_at"}),
            json!({"type":"listInsert","table":"tasks","id":"1","key":"tags","value":"x","position":{"after":"y"}}),
            json!({"type":"listRemove","table":"tasks","id":"1","key":"tags","value":"x"}),
            json!({"type":"create","table":"tasks","id":"1","value":{"title":"t"},"expect_absent":true}),
            json!({"type":"delete","table":"tasks","id":"1","expect_version":2}),
        ];
        for op in ops {
            let parsed = Op::parse(&op).unwrap();
            let mut expected = op.clone();
            if parsed.action.type_name() == "listInsert" {
                expected["position"] = json!({"after": "y"});
            }
            assert_eq!(parsed.to_json(), expected);
        }
    }

    #[test]
    fn numeric_ids_become_text_and_position_defaults_to_append() {
        let op = Op::parse(&json!({"type":"listInsert","table":"t","id":42,"key":"k","value":1}))
            .unwrap();
        assert_eq!(op.id, "42");
        assert!(matches!(
            op.action,
            Action::ListInsert {
                position: Position::Append,
                ..
            }
        ));
    }
}
