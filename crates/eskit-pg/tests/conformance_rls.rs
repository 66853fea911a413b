//! The store conformance suite on PostgreSQL, the store connecting as an
//! application role bound by row-level security (no superuser, no
//! `BYPASSRLS`, not the tables' owner, only the grants of
//! `PgStore::grant_access`), each scenario's schema migrated by its owner
//! first (see `conformance_support`). Ends with
//! `conformance postgres-rls: N passed, M failed`.

mod common;
mod conformance_support;

fn main() -> std::process::ExitCode {
    conformance_support::main("postgres-rls", conformance_support::Mode::AppRole)
}
