//! RELIABILITY C2 (at-least-once) on PostgreSQL through eskit-processor: a
//! subscriber process is killed with SIGKILL at random points, again and
//! again, each time with a backlog to catch up on; each new process resumes
//! from its checkpoint in the store's schema. Nothing is lost, and each
//! kill redelivers at most one checkpoint interval. The scenario is
//! `eskit_testing::processor::kill`'s; this binary is its parent and, run
//! again, its children. `ESKIT_C2_KILLS` sets the number of kills (default
//! 50). The server comes from `ESKIT_PG_URL`.

mod common;
#[path = "common/processor.rs"]
mod pg_backend;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = common::url() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("kill_resume (postgres): {e}");
        }
        return ExitCode::FAILURE;
    }
    eskit_testing::processor::kill::kill_resume_main("postgres", pg_backend::Postgres::new("c2"))
}
