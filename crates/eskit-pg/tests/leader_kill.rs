//! Leader handover across processes on PostgreSQL (RELIABILITY C3-style):
//! two subscriber processes run one subscription name with a leader lease
//! from eskit-pg's advisory locks; the leader is killed with SIGKILL again
//! and again (a replacement is started each time) while events are
//! appended. Fencing tokens never go down and each belongs to one process,
//! another process takes over after each kill, nothing is lost, and each
//! handover redelivers at most one checkpoint interval. The scenario is
//! `eskit_testing::processor::kill`'s; `ESKIT_C3_KILLS` sets the number of
//! kills (default 5). The server comes from `ESKIT_PG_URL`.

mod common;
#[path = "common/processor.rs"]
mod pg_backend;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = common::url() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("leader_kill (postgres): {e}");
        }
        return ExitCode::FAILURE;
    }
    eskit_testing::processor::kill::leader_kill_main(
        "postgres",
        pg_backend::Postgres::new("leader"),
    )
}
