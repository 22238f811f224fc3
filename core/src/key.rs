//! A key names a column, or a path into a json/jsonb column: `"meta.color"` or
//! `["meta","color"]` (the array form allows dots inside names).

use crate::error::OpError;
use crate::Row;
use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldKey {
    pub column: String,
    pub path: Vec<String>,
}

impl FieldKey {
    pub fn column(name: &str) -> Self {
        FieldKey {
            column: name.to_string(),
            path: Vec::new(),
        }
    }

    pub fn parse(value: &Value) -> Result<FieldKey, OpError> {
        let segments: Vec<String> = match value {
            Value::String(s) => s.split('.').map(str::to_string).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(OpError::new("key", "path segments must be strings")),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(OpError::new(
                    "key",
                    "must be a column name, a dotted path or an array of names",
                ))
            }
        };
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err(OpError::new("key", "names in a key cannot be empty"));
        }
        let mut segments = segments.into_iter();
        let column = segments.next().unwrap_or_default();
        Ok(FieldKey {
            column,
            path: segments.collect(),
        })
    }

    /// The wire form: a dotted string when no name contains a dot, else an array.
    pub fn to_json(&self) -> Value {
        let names = std::iter::once(&self.column).chain(&self.path);
        if names.clone().any(|n| n.contains('.')) {
            Value::Array(names.cloned().map(Value::String).collect())
        } else {
            Value::String(self.to_string())
        }
    }

    /// The value at this key; `None` when a path leads nowhere.
    pub fn get<'a>(&self, row: &'a Row) -> Option<&'a Value> {
        let mut current = row.get(&self.column)?;
        for name in &self.path {
            current = current.as_object()?.get(name)?;
        }
        Some(current)
    }

    /// Writes `value` at this key, creating missing objects along a path.
    pub fn set(&self, row: &mut Row, value: Value) -> Result<(), crate::ApplyError> {
        let Some((last, parents)) = self.path.split_last() else {
            row.insert(self.column.clone(), value);
            return Ok(());
        };
        let mut current = row.entry(self.column.clone()).or_insert(Value::Null);
        for name in parents {
            current = self
                .object_mut(current)?
                .entry(name.clone())
                .or_insert(Value::Null);
        }
        self.object_mut(current)?.insert(last.clone(), value);
        Ok(())
    }

    /// Removes the value at this key: a column becomes null, a path's last name is dropped.
    pub fn remove(&self, row: &mut Row) -> Result<(), crate::ApplyError> {
        let Some((last, parents)) = self.path.split_last() else {
            row.insert(self.column.clone(), Value::Null);
            return Ok(());
        };
        let Some(mut current) = row.get_mut(&self.column) else {
            return Ok(());
        };
        for name in parents {
            match current {
                Value::Null => return Ok(()),
                Value::Object(map) => match map.get_mut(name) {
                    Some(next) => current = next,
                    None => return Ok(()),
                },
                _ => return Err(self.not_an_object()),
            }
        }
        match current {
            Value::Null => Ok(()),
            Value::Object(map) => {
                map.remove(last);
                Ok(())
            }
            _ => Err(self.not_an_object()),
        }
    }

    fn object_mut<'a>(
        &self,
        value: &'a mut Value,
    ) -> Result<&'a mut Map<String, Value>, crate::ApplyError> {
        if value.is_null() {
            *value = Value::Object(Map::new());
        }
        value.as_object_mut().ok_or_else(|| self.not_an_object())
    }

    fn not_an_object(&self) -> crate::ApplyError {
        crate::ApplyError::NotAnObject {
            key: self.to_string(),
        }
    }
}

impl fmt::Display for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.column)?;
        for name in &self.path {
            write!(f, ".{name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_both_forms() {
        let dotted = FieldKey::parse(&json!("meta.color")).unwrap();
        let array = FieldKey::parse(&json!(["meta", "color"])).unwrap();
        assert_eq!(dotted, array);
        assert_eq!(dotted.column, "meta");
        assert_eq!(dotted.to_json(), json!("meta.color"));
        let with_dot = FieldKey::parse(&json!(["meta", "a.b"])).unwrap();
        assert_eq!(with_dot.to_json(), json!(["meta", "a.b"]));
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            json!(""),
            json!("a..b"),
            json!([]),
            json!([1]),
            json!(3),
            json!(null),
        ] {
            assert!(FieldKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_creates_objects_and_refuses_scalars() {
        let mut r = row(json!({"meta": null}));
        FieldKey::parse(&json!("meta.a.b"))
            .unwrap()
            .set(&mut r, json!(1))
            .unwrap();
        assert_eq!(r["meta"], json!({"a": {"b": 1}}));
        let mut r = row(json!({"meta": {"a": 5}}));
        let err = FieldKey::parse(&json!("meta.a.b"))
            .unwrap()
            .set(&mut r, json!(1));
        assert!(matches!(err, Err(crate::ApplyError::NotAnObject { .. })));
    }

    #[test]
    fn remove_drops_path_and_nulls_columns() {
        let mut r = row(json!({"meta": {"a": 1, "b": 2}, "title": "x"}));
        FieldKey::parse(&json!("meta.a"))
            .unwrap()
            .remove(&mut r)
            .unwrap();
        FieldKey::parse(&json!("title"))
            .unwrap()
            .remove(&mut r)
            .unwrap();
        assert_eq!(Value::Object(r), json!({"meta": {"b": 2}, "title": null}));
    }
}
