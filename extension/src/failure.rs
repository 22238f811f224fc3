//! Everything `_apply` and `_get` can refuse, each with its SQLSTATE (docs/sql/errors.md lists them).

use rowsync_core::{codes, ApplyError, OpError};
use serde_json::{json, Value};

#[derive(Debug)]
pub enum Failure {
    /// RS001: a malformed transaction or op.
    InvalidOp(OpError),
    /// RS002: the table is not synced (or does not exist).
    NotSynced { table: String },
    /// RS003: no such column.
    UnknownColumn {
        index: usize,
        table: String,
        column: String,
    },
    /// RS004: a value of the wrong JSON kind for its column, or a key into a non-object.
    WrongType {
        index: usize,
        key: String,
        message: String,
    },
    /// RS404: the row does not exist or the caller cannot see it (not told apart).
    NotFound {
        index: usize,
        table: String,
        id: String,
    },
    /// RS409: the row is at another version than the op was based on.
    Conflict {
        index: usize,
        table: String,
        id: String,
        expected: i64,
        current: Option<i64>,
    },
    /// 42501: the caller can see the row but its policies forbid this change.
    Denied {
        index: usize,
        table: String,
        id: String,
    },
    /// 23505: `create` on an id that is taken.
    AlreadyExists {
        index: usize,
        table: String,
        id: String,
    },
}

impl Failure {
    pub fn from_apply(index: usize, table: &str, id: &str, error: ApplyError) -> Failure {
        let (table, id) = (table.to_string(), id.to_string());
        match error {
            ApplyError::NotFound => Failure::NotFound { index, table, id },
            ApplyError::AlreadyExists => Failure::AlreadyExists { index, table, id },
            ApplyError::Conflict { expected, current } => Failure::Conflict {
                index,
                table,
                id,
                expected,
                current,
            },
            e @ (ApplyError::NotAList { .. } | ApplyError::NotAnObject { .. }) => {
                let key = match &e {
                    ApplyError::NotAList { key } | ApplyError::NotAnObject { key } => key.clone(),
                    _ => String::new(),
                };
                Failure::WrongType {
                    index,
                    key,
                    message: e.to_string(),
                }
            }
        }
    }

    pub fn sqlstate(&self) -> &'static str {
        match self {
            Failure::InvalidOp(_) => codes::INVALID_OP.sqlstate,
            Failure::NotSynced { .. } => codes::TABLE_NOT_SYNCED.sqlstate,
            Failure::UnknownColumn { .. } => codes::UNKNOWN_COLUMN.sqlstate,
            Failure::WrongType { .. } => codes::WRONG_TYPE.sqlstate,
            Failure::NotFound { .. } => codes::NOT_FOUND.sqlstate,
            Failure::Conflict { .. } => codes::CONFLICT.sqlstate,
            Failure::Denied { .. } => "42501",
            Failure::AlreadyExists { .. } => "23505",
        }
    }

    /// `{"error": {sqlstate, message, detail, hint, index?, field?, current_version?}}`.
    pub fn to_json(&self) -> Value {
        let (message, detail, hint) = match self {
            Failure::InvalidOp(e) => (
                format!("invalid operation: {e}"),
                match e.index {
                    Some(i) => format!("op {i}, field \"{}\"", e.field),
                    None => format!("field \"{}\"", e.field),
                },
                "see docs/sql.md for the form of a transaction and its ops".to_string(),
            ),
            Failure::NotSynced { table } => (
                format!("table \"{table}\" is not synced"),
                "no synced table has this name".to_string(),
                "call rowsync.enable(table) first".to_string(),
            ),
            Failure::UnknownColumn {
                index,
                table,
                column,
            } => (
                format!("table \"{table}\" has no column \"{column}\""),
                format!("op {index}"),
                "check the column name".to_string(),
            ),
            Failure::WrongType {
                index,
                key,
                message,
            } => (
                format!("wrong type for \"{key}\": {message}"),
                format!("op {index}"),
                "send a JSON value of the column's type".to_string(),
            ),
            Failure::NotFound { index, table, id } => (
                format!("row {table}:{id} not found or not visible"),
                format!("op {index}"),
                "the row does not exist or your policies hide it".to_string(),
            ),
            Failure::Conflict {
                index,
                table,
                id,
                expected,
                current,
            } => (
                format!("version conflict on {table}:{id}"),
                match current {
                    Some(c) => {
                        format!("op {index} expected version {expected}, the row is at version {c}")
                    }
                    None => {
                        format!("op {index} expected version {expected}, the row has no version")
                    }
                },
                "re-read the row, then retry against its current version".to_string(),
            ),
            Failure::Denied { index, table, id } => (
                format!("permission denied to change row {table}:{id}"),
                format!("op {index}: the row is visible, but no policy lets you change it"),
                "check the table's row-level security policies".to_string(),
            ),
            Failure::AlreadyExists { index, table, id } => (
                format!("row {table}:{id} already exists"),
                format!("op {index}"),
                "create rows with fresh ids (UUIDs)".to_string(),
            ),
        };
        let mut error = json!({
            "sqlstate": self.sqlstate(),
            "message": message,
            "detail": detail,
            "hint": hint,
        });
        match self {
            Failure::InvalidOp(e) => {
                error["index"] = json!(e.index);
                error["field"] = json!(e.field);
            }
            Failure::NotSynced { .. } => {}
            Failure::UnknownColumn { index, .. }
            | Failure::WrongType { index, .. }
            | Failure::NotFound { index, .. }
            | Failure::Denied { index, .. }
            | Failure::AlreadyExists { index, .. } => error["index"] = json!(index),
            Failure::Conflict { index, current, .. } => {
                error["index"] = json!(index);
                error["current_version"] = json!(current);
            }
        }
        json!({ "error": error })
    }
}
