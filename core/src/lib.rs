//! rowsync's operation semantics, shared by the extension, the bridge and (through the
//! shared test vectors) the browser client.
//!
//! A row is a JSON object of column name to value, as `to_jsonb(row)` gives it. Ops are
//! parsed from the wire format ([`op`]), applied to rows one at a time ([`apply`]) and
//! each yields the op that undoes it, computed from the row as it was.

pub mod apply;
pub mod codes;
pub mod error;
pub mod json;
pub mod key;
pub mod list;
pub mod op;
pub mod tx;
pub mod vectors;
pub mod ydoc;

pub use apply::{apply_op, Outcome, Skip, SkipReason};
pub use error::{ApplyError, OpError};
pub use key::FieldKey;
pub use op::{Action, Op, Position};
pub use tx::{apply_tx, is_uuid, RowKey, Rows, Transaction, TxError, TxOutcome};

/// A row: column name to value.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// The column every synced table carries; rowsync manages it, ops never set it.
pub const VERSION_COLUMN: &str = "version";
