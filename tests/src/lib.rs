//! Support for the end-to-end tests: a Postgres cluster started for the run.
