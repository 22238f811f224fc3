//! End-to-end tests of the extension against a real Postgres cluster over real
//! connections: everything that needs commits, several sessions or notifications.

mod bridge_input;
mod bridge_live;
mod bridge_presence;
mod bridge_resume;
mod feed;
mod golden;
mod input;
mod rls;
mod writes;
