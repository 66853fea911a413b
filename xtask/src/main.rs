//! The workspace's own tool: `cargo xtask <command>`.
//!
//! - `test [--fresh]`: the whole gate (fetch, fmt, clippy, tests against real servers, docs,
//!   cargo-deny); `--fresh` runs it under an empty `CARGO_HOME` and target dir.
//! - `conformance --backend <memory|sqlite|postgres|postgres-rls|nats>`: the store conformance suite.
//! - `bench [--backend B] [--workload W] [--json FILE]`: cross-backend benchmarks.
//! - `codegen [--check]`: regenerate committed generated code.
//! - `parity [--check]`: render STORE_PARITY.md from the conformance reports.
//! - `servers`: start throw-away PostgreSQL and NATS servers and wait (for local work).
//!
//! xtask depends on nothing but std so that it compiles in seconds.

mod bench;
mod codegen;
mod conformance;
mod parity;
mod servers;
mod test;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match cmd {
        "test" => test::run(rest),
        "conformance" => conformance::run(rest),
        "bench" => bench::run(rest),
        "codegen" => codegen::run(rest),
        "servers" => servers::run(rest),
        "parity" => parity::run(rest),
        "help" | "--help" | "-h" => {
            util::say(HELP);
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            util::say(&format!("xtask: error: {e}"));
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "usage: cargo xtask <command>
  test [--fresh [--keep]]      fetch, fmt, clippy, all tests against real servers, docs, cargo-deny
                               (--fresh: under an empty CARGO_HOME and target dir, as on a new machine)
  conformance --backend B      run the store conformance suite (memory|sqlite|postgres|postgres-rls|nats)
  bench [--backend B] [--workload W] [--json FILE]
                               run benchmark workloads and print a comparison table
  codegen [--check]            regenerate generated code (or check it is current)
  parity [--check]             render STORE_PARITY.md from the conformance reports
  servers                      start throw-away PostgreSQL and NATS and wait for Ctrl-C";
