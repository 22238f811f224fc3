//! Subscription keys: a record `table:id`, a scope `table?column=value`, or a whole table
//! `table` (every row of it the user may see).

use crate::errors::{self, Error};

pub const MAX_KEY_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Record {
        table: String,
        id: String,
    },
    Scope {
        table: String,
        column: String,
        value: String,
    },
    Table {
        table: String,
    },
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, Error> {
        let bad = |why: &str| {
            Error::new(
                errors::BAD_KEY,
                format!("bad key {:?}: {why}", truncate(text)),
            )
        };
        if text.len() > MAX_KEY_BYTES {
            return Err(bad("longer than 512 bytes"));
        }
        let key = if let Some((table, rest)) = text.split_once('?') {
            let (column, value) = rest
                .split_once('=')
                .ok_or_else(|| bad("a scope is table?column=value"))?;
            if !is_name(column) {
                return Err(bad("the column is not a name"));
            }
            if value.is_empty() {
                return Err(bad("the value is empty"));
            }
            Key::Scope {
                table: table.into(),
                column: column.into(),
                value: value.into(),
            }
        } else if let Some((table, id)) = text.split_once(':') {
            if id.is_empty() {
                return Err(bad("the id is empty"));
            }
            Key::Record {
                table: table.into(),
                id: id.into(),
            }
        } else {
            Key::Table { table: text.into() }
        };
        if !is_table_name(key.table()) {
            return Err(bad("the table is not a name"));
        }
        Ok(key)
    }

    /// The spelling the change feed uses: UUIDs in lower case, as Postgres prints them.
    pub fn canonical(&self) -> String {
        match self {
            Key::Record { table, id } => Key::record(table, &fold(id)),
            Key::Scope {
                table,
                column,
                value,
            } => Key::scope(table, column, &fold(value)),
            Key::Table { table } => table.clone(),
        }
    }

    /// For a scope or table key, the table and the scope's (column, value), `None` for a
    /// whole table; `None` for a record key.
    pub fn rows(&self) -> Option<(&str, Option<(&str, &str)>)> {
        match self {
            Key::Record { .. } => None,
            Key::Scope {
                table,
                column,
                value,
            } => Some((table, Some((column, value)))),
            Key::Table { table } => Some((table, None)),
        }
    }

    pub fn table(&self) -> &str {
        match self {
            Key::Record { table, .. } | Key::Scope { table, .. } | Key::Table { table } => table,
        }
    }

    /// How the router files the events `rowsync.send` addresses to `user:<sub>`: with a
    /// leading `@`, which no subscription key can have, so that a record key of a table
    /// named `user` never receives another user's events.
    pub fn user_topic(sub: &str) -> String {
        format!("@user:{sub}")
    }

    /// Whether `key` is a record, scope or table key of `table`.
    pub fn of_table(key: &str, table: &str) -> bool {
        key.strip_prefix(table)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('?'))
    }

    pub fn record(table: &str, id: &str) -> String {
        format!("{table}:{id}")
    }

    pub fn scope(table: &str, column: &str, value: &str) -> String {
        format!("{table}?{column}={value}")
    }
}

/// An id or value as keys spell it: UUIDs in the lower case Postgres prints them in.
pub fn fold(v: &str) -> String {
    if rowsync_core::is_uuid(v) {
        v.to_ascii_lowercase()
    } else {
        v.to_string()
    }
}

pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn is_table_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.split('.').all(is_name)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_scopes() {
        assert_eq!(
            Key::parse("tasks:1").unwrap(),
            Key::Record {
                table: "tasks".into(),
                id: "1".into()
            }
        );
        assert_eq!(
            Key::parse("app.tasks?board_id=b:1").unwrap(),
            Key::Scope {
                table: "app.tasks".into(),
                column: "board_id".into(),
                value: "b:1".into()
            }
        );
        assert_eq!(
            Key::parse("app.tasks").unwrap(),
            Key::Table {
                table: "app.tasks".into()
            }
        );
        for bad in [
            "",
            "tasks:",
            "tasks?board",
            "tasks?=1",
            "tasks?a b=1",
            "ta sks:1",
            ":1",
            "t;drop:1",
        ] {
            assert!(Key::parse(bad).is_err(), "{bad}");
        }
        assert!(Key::parse(&format!("tasks:{}", "x".repeat(600))).is_err());
        let upper = Key::parse("tasks?board_id=0B5E4F6A-1111-4222-8333-944455556666").unwrap();
        assert_eq!(
            upper.canonical(),
            "tasks?board_id=0b5e4f6a-1111-4222-8333-944455556666"
        );
    }

    #[test]
    fn keys_belong_to_their_table_only() {
        assert!(Key::of_table("tasks:1", "tasks"));
        assert!(Key::of_table("tasks?board_id=b", "tasks"));
        assert!(Key::of_table("tasks", "tasks"));
        assert!(!Key::of_table("tasks2", "tasks"));
        assert!(!Key::of_table("tasks2:1", "tasks"));
        assert!(!Key::of_table("app.tasks:1", "tasks"));
        assert!(!Key::of_table("@user:tasks", "tasks"));
    }
}
