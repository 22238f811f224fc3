//! rowsync-bridge: turns the extension's change feed into WebSocket subscription updates,
//! runs browsers' reads and writes as their users, and carries presence and broadcast.
//! The library holds everything; `main.rs` only loads config and binds.

pub mod auth;
pub mod config;
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
pub mod token;
pub mod ws;

pub use config::Config;
pub use server::{app, run};
