//! The two kinds of error: an op that is malformed, and an op that cannot apply to the row.

use std::fmt;

/// A malformed transaction or op: which op (if any), which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl OpError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        OpError {
            index: None,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "op {i}, field \"{}\": {}", self.field, self.message),
            None => write!(f, "field \"{}\": {}", self.field, self.message),
        }
    }
}

impl std::error::Error for OpError {}

/// A well-formed op that cannot apply to the row as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// The row does not exist (or the caller cannot see it: the two are not told apart).
    NotFound,
    /// `create` on an id that is taken.
    AlreadyExists,
    /// The op was based on `expected`, the row is at `current`.
    Conflict { expected: i64, current: Option<i64> },
    /// A list op on a value that is not a list.
    NotAList { key: String },
    /// A path that runs through a value that is not an object.
    NotAnObject { key: String },
}

impl ApplyError {
    /// Stable name used by the shared test vectors and on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            ApplyError::NotFound => crate::codes::NOT_FOUND.wire,
            // A taken id is Postgres's unique violation (23505), not a code of rowsync's.
            ApplyError::AlreadyExists => "already_exists",
            ApplyError::Conflict { .. } => crate::codes::CONFLICT.wire,
            ApplyError::NotAList { .. } | ApplyError::NotAnObject { .. } => {
                crate::codes::WRONG_TYPE.wire
            }
        }
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::NotFound => write!(f, "row not found or not visible"),
            ApplyError::AlreadyExists => write!(f, "a row with this id already exists"),
            ApplyError::Conflict { expected, current } => match current {
                Some(c) => write!(f, "version conflict: expected {expected}, row is at {c}"),
                None => write!(
                    f,
                    "version conflict: expected {expected}, row has no version"
                ),
            },
            ApplyError::NotAList { key } => write!(f, "\"{key}\" does not hold a list"),
            ApplyError::NotAnObject { key } => {
                write!(f, "\"{key}\" runs through a value that is not an object")
            }
        }
    }
}

impl std::error::Error for ApplyError {}
