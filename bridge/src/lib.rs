//! rowsync-bridge: turns the extension's change feed into rows pushed over WebSockets, each
//! as its subscriber's own policies show it; runs browsers' reads and writes as their
//! users; and carries presence and broadcast between bridges.
//!
//! The path of one write, from Postgres to a browser:
//!
//! 1. A write to a synced table appends to `rowsync.changes` (the extension's capture
//!    trigger) and, if a bridge sleeps, wakes it at commit.
//! 2. [`feed`] reads the batch since its tick (`rowsync.advance`), as [`feed::change`]
//!    rows, and coalesces them per row.
//! 3. [`router`] names the connections that follow each row's keys ([`keys`]).
//! 4. [`feed::visibility`] checks, in one statement for many identities
//!    (`rowsync.visible_rows`), which rows each connection's identity may see, with the
//!    rows' data, and queues an `upsert` or `remove` item ([`protocol`]) in each
//!    connection's [`outbox`].
//! 5. [`ws`] turns the queue into `changes` messages, sending a `remove` only to a
//!    connection that holds the row; [`cursor`] is where the feed stands, and every
//!    message carries a resume token ([`token`]).
//!
//! Around that path: [`ws::subscriptions`] checks keys as the user and catches resumed
//! clients up; [`db`] runs the user's reads and writes; [`presence`] carries rooms across
//! bridges; [`http`] serves the HTTP API and the upgrade; [`state`] is what all of them
//! share; [`yjs`] serves collaborative documents to y-websocket clients; [`server`]
//! starts and stops it all; [`auth`], [`config`], [`errors`] and
//! [`metrics`] are what their names say.

pub mod auth;
pub mod config;
pub mod cursor;
pub mod db;
pub mod errors;
pub mod feed;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod router;
pub mod server;
pub mod state;
pub mod token;
pub mod ws;
pub mod yjs;

pub use config::Config;
pub use server::{app, run};
