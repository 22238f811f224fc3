//! Reading the shared vectors (`tests/vectors/*.json`) for every Rust runner: the core's
//! own tests and the extension's. The format is in `tests/vectors/README.md`.

use crate::json::deep_eq;
use serde_json::{Map, Value};

pub struct VectorFile {
    pub description: String,
    pub cases: Vec<Case>,
}

pub struct Case {
    pub name: String,
    pub defaults: Map<String, Value>,
    /// Table name to rows, as given (with `version`).
    pub before: Map<String, Value>,
    pub tx: Value,
    pub expected: Expected,
}

pub enum Expected {
    Applied {
        after: Map<String, Value>,
        inverse: Vec<Value>,
        skipped: Vec<Value>,
    },
    Error {
        code: String,
        /// The op the error is in; `None` for the transaction itself.
        index: Option<usize>,
        field: Option<String>,
    },
}

impl VectorFile {
    pub fn parse(text: &str) -> Result<VectorFile, String> {
        let file: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let object = |v: &Value, what: &str| -> Result<Map<String, Value>, String> {
            v.as_object()
                .cloned()
                .ok_or(format!("{what} must be an object"))
        };
        let defaults = object(&file["defaults"], "defaults")?;
        let file_before = object(&file["before"], "before")?;
        let cases = file["cases"]
            .as_array()
            .ok_or("cases must be an array")?
            .iter()
            .map(|c| {
                let name = c["name"].as_str().unwrap_or("unnamed").to_string();
                let before = match c.get("before") {
                    Some(b) => object(b, "before")?,
                    None => file_before.clone(),
                };
                let expected = match c.get("error") {
                    Some(e) => Expected::Error {
                        code: e["code"].as_str().ok_or("error.code")?.to_string(),
                        index: e["index"].as_u64().map(|i| i as usize),
                        field: e["field"].as_str().map(str::to_string),
                    },
                    None => Expected::Applied {
                        after: object(&c["after"], "after")?,
                        inverse: c["inverse"].as_array().ok_or("inverse")?.clone(),
                        skipped: c
                            .get("skipped")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    },
                };
                Ok(Case {
                    name,
                    defaults: defaults.clone(),
                    before,
                    tx: c["tx"].clone(),
                    expected,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(VectorFile {
            description: file["description"].as_str().unwrap_or("").to_string(),
            cases,
        })
    }
}

/// Rows of one table in comparable form: defaults filled in, `version` dropped, sorted by id.
pub fn normalise(rows: &[Value], defaults: &Map<String, Value>) -> Vec<Value> {
    let mut out: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut full = defaults.clone();
            if let Some(obj) = row.as_object() {
                for (k, v) in obj {
                    full.insert(k.clone(), v.clone());
                }
            }
            full.remove(crate::VERSION_COLUMN);
            Value::Object(full)
        })
        .collect();
    out.sort_by(|a, b| a["id"].to_string().cmp(&b["id"].to_string()));
    out
}

/// Replaces every `"$now"` string with the transaction's timestamp.
pub fn with_now(value: &Value, now: &Value) -> Value {
    match value {
        Value::String(s) if s == "$now" => now.clone(),
        Value::Array(items) => Value::Array(items.iter().map(|v| with_now(v, now)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), with_now(v, now)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `Ok` when `actual` deep-equals `expected`, else a message showing both.
pub fn check(what: &str, actual: &Value, expected: &Value) -> Result<(), String> {
    if deep_eq(actual, expected) {
        Ok(())
    } else {
        Err(format!(
            "{what}:\n  expected {expected}\n  actual   {actual}"
        ))
    }
}
