//! End-to-end tests against a real Postgres cluster: the extension over real connections
//! (commits, several sessions, notifications) and the bridge over real WebSockets. The
//! demo in Chromium is its own binary (browser.rs).

mod bridge_access;
mod bridge_events;
mod bridge_input;
mod bridge_live;
mod bridge_presence;
mod bridge_resume;
mod bridge_visibility;
mod docs;
mod documents;
mod feed;
mod golden;
mod input;
mod rls;
mod sql_examples;
mod visibility;
mod writes;
mod yjs_documents;
