//! Shared by the test targets: the server URL and fresh schemas.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server.
pub const URL_VAR: &str = "ESKIT_PG_URL";

/// The server URL, or a message saying how to get one.
pub fn url() -> Result<String, String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => Err(format!(
            "{URL_VAR} is not set: these tests need a PostgreSQL server. Run `cargo xtask servers` \
             in another shell and export the {URL_VAR} line it prints, or run them through \
             `cargo xtask test` / `cargo xtask conformance --backend postgres`, which start one"
        )),
    }
}

/// A schema name no other test of this run uses.
pub fn fresh_schema(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
