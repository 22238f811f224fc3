//! Every error the bridge reports, with its wire code, HTTP status and whether a retry
//! may succeed; rowsync's own codes come from rowsync_core::codes. A test holds
//! docs/errors.md to both.

use rowsync_core::codes;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub code: &'static str,
    pub status: u16,
    pub temporary: bool,
}

const fn kind(code: &'static str, status: u16, temporary: bool) -> Kind {
    Kind {
        code,
        status,
        temporary,
    }
}

// Requests the bridge refuses itself.
pub const BAD_JSON: Kind = kind("bad_json", 400, false);
pub const UNKNOWN_TYPE: Kind = kind("unknown_type", 400, false);
pub const BAD_MESSAGE: Kind = kind("bad_message", 400, false);
pub const BAD_KEY: Kind = kind("bad_key", 400, false);
pub const FRAME_TOO_LARGE: Kind = kind("frame_too_large", 413, false);
pub const TOO_MANY_SUBSCRIPTIONS: Kind = kind("too_many_subscriptions", 429, false);
pub const TOO_MANY_ROOMS: Kind = kind("too_many_rooms", 429, false);
pub const RATE_LIMITED: Kind = kind("rate_limited", 429, true);
pub const STATE_TOO_LARGE: Kind = kind("state_too_large", 413, false);
pub const NOT_JOINED: Kind = kind("not_joined", 409, false);
pub const UNAUTHORIZED: Kind = kind("unauthorized", 401, false);
pub const TOKEN_EXPIRED: Kind = kind("token_expired", 401, false);
pub const FORBIDDEN_ORIGIN: Kind = kind("forbidden_origin", 403, false);
pub const INTERNAL: Kind = kind("internal", 500, true);

// What the extension refuses: rowsync's own codes (rowsync_core::codes).
const fn rowsync(code: codes::Code) -> Kind {
    kind(code.wire, code.http, code.temporary)
}
pub const INVALID_OP: Kind = rowsync(codes::INVALID_OP);
pub const NOT_FOUND: Kind = rowsync(codes::NOT_FOUND);

// What Postgres refuses, by SQLSTATE.
pub const PERMISSION_DENIED: Kind = kind("permission_denied", 403, false);
pub const ALREADY_EXISTS: Kind = kind("already_exists", 409, false);
pub const CONSTRAINT: Kind = kind("constraint_violation", 422, false);
pub const INVALID_VALUE: Kind = kind("invalid_value", 400, false);
pub const RETRY: Kind = kind("retry", 503, true);
pub const TIMEOUT: Kind = kind("timeout", 504, true);
pub const DATABASE_UNAVAILABLE: Kind = kind("database_unavailable", 503, true);

/// Every code the bridge sends that is not rowsync's own (those are rowsync_core::codes).
pub const BRIDGE_CODES: [Kind; 22] = [
    BAD_JSON,
    UNKNOWN_TYPE,
    BAD_MESSAGE,
    BAD_KEY,
    FRAME_TOO_LARGE,
    TOO_MANY_SUBSCRIPTIONS,
    TOO_MANY_ROOMS,
    RATE_LIMITED,
    STATE_TOO_LARGE,
    NOT_JOINED,
    UNAUTHORIZED,
    TOKEN_EXPIRED,
    FORBIDDEN_ORIGIN,
    INTERNAL,
    PERMISSION_DENIED,
    ALREADY_EXISTS,
    CONSTRAINT,
    INVALID_VALUE,
    RETRY,
    TIMEOUT,
    DATABASE_UNAVAILABLE,
    // Sent by the bridge for a key or room the user may not follow, as well as for RS404.
    NOT_FOUND,
];

/// The one mapping from SQLSTATE to wire error.
pub fn for_sqlstate(state: &str) -> Kind {
    if let Some(code) = codes::for_sqlstate(state) {
        return rowsync(code);
    }
    match state {
        "42501" => PERMISSION_DENIED,
        "23505" => ALREADY_EXISTS,
        "40001" | "40P01" | "55P03" => RETRY,
        "57014" => TIMEOUT,
        s if s.starts_with("23") => CONSTRAINT,
        s if s.starts_with("22") => INVALID_VALUE,
        s if s.starts_with("08") || s.starts_with("57P") || s.starts_with("53") => {
            DATABASE_UNAVAILABLE
        }
        _ => INTERNAL,
    }
}

/// An error reply or push: a stable code (docs/errors.md), a message for people, and
/// whether retrying the same request later may succeed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub temporary: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: Kind,
    pub body: Box<ErrorBody>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            body: Box::new(ErrorBody {
                code: kind.code,
                message: message.into(),
                temporary: kind.temporary,
                sqlstate: None,
                detail: None,
                hint: None,
            }),
        }
    }

    /// A database error as the client may see it: the extension's and Postgres's
    /// messages are written for the caller; internals (connection errors) are not shown.
    pub fn from_db(error: &tokio_postgres::Error) -> Error {
        let Some(db) = error.as_db_error() else {
            tracing::warn!(%error, "database unavailable");
            return Error::new(
                DATABASE_UNAVAILABLE,
                "the database is unavailable; retry later",
            );
        };
        let state = db.code().code();
        let kind = for_sqlstate(state);
        if kind == INTERNAL {
            tracing::error!(
                sqlstate = state,
                message = db.message(),
                "unexpected database error"
            );
            return Error::new(INTERNAL, "internal error");
        }
        let mut e = Error::new(kind, db.message());
        e.body.sqlstate = Some(state.to_string());
        e.body.detail = db.detail().filter(|d| !d.is_empty()).map(str::to_string);
        e.body.hint = db.hint().filter(|h| !h.is_empty()).map(str::to_string);
        e
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error::from_db(&e)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Error {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::from_db(&e),
            other => {
                tracing::warn!(error = %other, "no database connection");
                Error::new(
                    DATABASE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the Markdown table under `heading` in docs/errors.md, as cells.
    fn table(heading: &str) -> Vec<Vec<String>> {
        let docs = include_str!("../../docs/errors.md");
        let section = docs.split(heading).nth(1).expect(heading);
        // The rest of the heading's line, then the separator row.
        section
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .collect()
            })
            .collect()
    }

    /// docs/errors.md lists every code the bridge sends, with its HTTP status and whether
    /// it is temporary, and maps each of rowsync's SQLSTATEs to its code and meaning, as the
    /// code does. The client's own codes collide with none of them.
    #[test]
    fn the_documented_codes_are_the_code() {
        use std::collections::BTreeSet;
        let documented: BTreeSet<(String, u16, bool)> = table("| code | HTTP |")
            .iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap(), r[2] == "true"))
            .collect();
        let mut codes: BTreeSet<(String, u16, bool)> = BRIDGE_CODES
            .iter()
            .map(|k| (k.code.to_string(), k.status, k.temporary))
            .collect();
        codes.extend(
            codes::ALL
                .iter()
                .map(|c| (c.wire.to_string(), c.http, c.temporary)),
        );
        assert_eq!(documented, codes, "docs/errors.md's codes");
        let rowsync: Vec<(String, String, String)> = table("| SQLSTATE | wire code |")
            .into_iter()
            .filter(|r| r[0].starts_with("RS"))
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect();
        let expected: Vec<(String, String, String)> = codes::ALL
            .iter()
            .map(|c| (c.sqlstate.into(), c.wire.into(), c.meaning.into()))
            .collect();
        assert_eq!(rowsync, expected, "docs/errors.md's RS rows");
        let client = client_codes();
        assert!(client.contains("request_timeout"), "{client:?}");
        for own in &client {
            assert!(codes.iter().all(|(code, ..)| code != own), "{own}");
        }
    }

    /// The codes the browser client makes up itself: every `code: '…'` in client/src.
    fn client_codes() -> std::collections::BTreeSet<String> {
        let dir = format!(
            "{}/../client/src",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        let mut found = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("client/src") {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            for part in text.split("code: '").skip(1) {
                found.insert(part.split('\'').next().unwrap_or_default().to_string());
            }
        }
        found
    }

    #[test]
    fn sqlstates_map_to_their_codes() {
        assert_eq!(for_sqlstate("RS409").code, "conflict");
        assert_eq!(for_sqlstate("23514"), CONSTRAINT);
        assert_eq!(for_sqlstate("22007"), INVALID_VALUE);
        assert_eq!(for_sqlstate("08006"), DATABASE_UNAVAILABLE);
        assert_eq!(for_sqlstate("XX000"), INTERNAL);
        assert!(for_sqlstate("40001").temporary);
    }
}
