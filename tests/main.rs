//! End-to-end tests against a real Postgres cluster: the extension over real connections
//! (commits, several sessions, notifications), the bridge over real WebSockets, and the
//! demo in Debian's Chromium.

mod bridge_input;
mod bridge_live;
mod bridge_presence;
mod bridge_resume;
mod browser;
mod feed;
mod golden;
mod input;
mod rls;
mod writes;
