//! End-to-end tests of the extension against a real Postgres cluster over real
//! connections: everything that needs commits, several sessions or notifications.

mod feed;
mod golden;
mod input;
mod rls;
mod writes;
