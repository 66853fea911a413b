//! RELIABILITY C2 (at-least-once) on SQLite: a subscriber process is killed
//! with SIGKILL at random points, again and again, each time with a backlog
//! to catch up on; each new process resumes from its SQLite checkpoint.
//! Nothing is lost, and each kill redelivers at most one checkpoint
//! interval. The scenario is `eskit_testing::processor::kill`'s; this
//! binary is its parent and, run again, its children. `ESKIT_C2_KILLS`
//! sets the number of kills (default 50).

mod common;

use std::process::ExitCode;

fn main() -> ExitCode {
    match common::Sqlite::new("c2") {
        Ok(backend) => eskit_testing::processor::kill::kill_resume_main("sqlite", backend),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("kill_resume (sqlite): {e}");
            }
            ExitCode::FAILURE
        }
    }
}
