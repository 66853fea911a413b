//! The store conformance suite on PostgreSQL, the store connecting as the
//! schema's owner (see `conformance_support`). Ends with
//! `conformance postgres: N passed, M failed`.

mod common;
mod conformance_support;

fn main() -> std::process::ExitCode {
    conformance_support::main("postgres", conformance_support::Mode::Owner)
}
