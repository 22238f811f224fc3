//! rowsync's own error codes, each defined once: the SQLSTATE the extension raises, the
//! code clients see on the wire, the HTTP status the bridge answers with, whether retrying
//! the same request later may succeed, and what it means. The extension raises these
//! SQLSTATEs, the bridge maps them to these codes, the vectors name these codes, and tests
//! hold docs/errors.md to this table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub sqlstate: &'static str,
    pub wire: &'static str,
    pub http: u16,
    pub temporary: bool,
    pub meaning: &'static str,
}

const fn code(
    sqlstate: &'static str,
    wire: &'static str,
    http: u16,
    temporary: bool,
    meaning: &'static str,
) -> Code {
    Code {
        sqlstate,
        wire,
        http,
        temporary,
        meaning,
    }
}

pub const INVALID_OP: Code = code(
    "RS001",
    "invalid_op",
    400,
    false,
    "malformed transaction, op or pointer",
);
pub const TABLE_NOT_SYNCED: Code = code(
    "RS002",
    "table_not_synced",
    404,
    false,
    "no synced table has that name",
);
pub const UNKNOWN_COLUMN: Code = code(
    "RS003",
    "unknown_column",
    400,
    false,
    "no such column; a column that is not one of the table's scopes",
);
pub const WRONG_TYPE: Code = code(
    "RS004",
    "wrong_type",
    400,
    false,
    "a value of the wrong JSON kind for its column",
);
pub const CANNOT_SYNC: Code = code(
    "RS005",
    "cannot_sync",
    400,
    false,
    "rowsync.enable refuses the table: its key, its version column, a scope's type or its name",
);
pub const PRIMARY_ONLY: Code = code(
    "RS006",
    "primary_only",
    503,
    true,
    "ticks are taken on the primary only",
);
pub const INVALID_UPDATE: Code = code(
    "RS013",
    "invalid_update",
    400,
    false,
    "bytes that are not a well-formed Yjs update",
);
pub const UPDATE_TOO_LARGE: Code = code(
    "RS014",
    "update_too_large",
    413,
    false,
    "a Yjs update larger than doc_max_update_bytes",
);
pub const DOCUMENT_TOO_LARGE: Code = code(
    "RS015",
    "document_too_large",
    413,
    false,
    "a document would grow past its max_bytes",
);
pub const COMPACTION_REFUSED: Code = code(
    "RS016",
    "compaction_refused",
    409,
    false,
    "a compacted snapshot would lose updates it replaces",
);
pub const NOT_FOUND: Code = code(
    "RS404",
    "not_found",
    404,
    false,
    "the row does not exist or the user cannot see it",
);
pub const CONFLICT: Code = code(
    "RS409",
    "conflict",
    409,
    false,
    "the row is at another version than the op's version",
);
pub const RESYNC: Code = code(
    "RS410",
    "resync",
    410,
    false,
    "the position is no longer in the change log",
);
pub const EVENT_TOO_LARGE: Code = code(
    "RS413",
    "event_too_large",
    413,
    false,
    "a rowsync.send payload over max_event_bytes",
);

/// Every code, in SQLSTATE order.
pub const ALL: [Code; 14] = [
    INVALID_OP,
    TABLE_NOT_SYNCED,
    UNKNOWN_COLUMN,
    WRONG_TYPE,
    CANNOT_SYNC,
    PRIMARY_ONLY,
    INVALID_UPDATE,
    UPDATE_TOO_LARGE,
    DOCUMENT_TOO_LARGE,
    COMPACTION_REFUSED,
    NOT_FOUND,
    CONFLICT,
    RESYNC,
    EVENT_TOO_LARGE,
];

/// The code of a SQLSTATE rowsync raises.
pub fn for_sqlstate(sqlstate: &str) -> Option<Code> {
    ALL.into_iter().find(|c| c.sqlstate == sqlstate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert!(a.sqlstate != b.sqlstate && a.wire != b.wire, "{a:?} {b:?}");
            }
        }
        assert_eq!(for_sqlstate("RS409"), Some(CONFLICT));
        assert_eq!(for_sqlstate("42501"), None);
    }
}
