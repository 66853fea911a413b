//! Leader handover across processes on SQLite (RELIABILITY C3-style): two
//! subscriber processes run one subscription name with a leader lease on
//! one SQLite file; the leader is killed with SIGKILL again and again (a
//! replacement is started each time) while events are appended. Fencing
//! tokens never go down and each belongs to one process, another process
//! takes over after each kill, nothing is lost, and each handover
//! redelivers at most one checkpoint interval. The scenario is
//! `eskit_testing::processor::kill`'s; `ESKIT_C3_KILLS` sets the number of
//! kills (default 5).

mod common;

use std::process::ExitCode;

fn main() -> ExitCode {
    match common::Sqlite::new("leader") {
        Ok(backend) => eskit_testing::processor::kill::leader_kill_main("sqlite", backend),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("leader_kill (sqlite): {e}");
            }
            ExitCode::FAILURE
        }
    }
}
