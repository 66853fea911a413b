//! RELIABILITY E6 for configured names: every hostile schema name from §D
//! is refused before anything reaches a server. The URL points at a port
//! where nothing listens, so a check that ran after connecting would fail
//! with a connection error instead of `InvalidSchema`.

use eskit_pg::{PgError, PgOptions, PgStore};

/// Nothing listens on port 1 of the loopback address.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/none";

#[tokio::test]
async fn hostile_schema_names_are_refused_before_connecting() -> Result<(), String> {
    let long = "a".repeat(64);
    let long_twin_a = format!("{}x", "b".repeat(63));
    let long_twin_b = format!("{}y", "b".repeat(63));
    for name in [
        "events; DROP TABLE x",
        "events\" --",
        "'; DROP TABLE events;--",
        "",
        " ",
        "a.b",
        "a/b",
        "a\\b",
        "x\0y",
        "\u{202e}abc",
        "Events",
        "pg_catalog",
        long.as_str(),
        long_twin_a.as_str(),
        long_twin_b.as_str(),
    ] {
        match PgStore::connect(PgOptions::new(NOWHERE).with_schema(name)).await {
            Err(PgError::InvalidSchema { .. }) => {}
            other => return Err(refused(name, &other)),
        }
    }
    Ok(())
}

#[tokio::test]
async fn malformed_urls_are_refused_before_connecting() -> Result<(), String> {
    for url in [
        "",
        "mysql://x@127.0.0.1/db",
        "postgres://u@127.0.0.1:notaport/db",
        "postgres://u@127.0.0.1/db\0",
    ] {
        match PgStore::connect(PgOptions::new(url)).await {
            Err(PgError::InvalidUrl { .. }) => {}
            other => return Err(refused(url, &other)),
        }
    }
    match PgStore::connect(PgOptions::new(NOWHERE).with_pool_size(0)).await {
        Err(PgError::InvalidPoolSize { size: 0 }) => {}
        other => return Err(refused("pool size 0", &other)),
    }
    Ok(())
}

fn refused(input: &str, got: &Result<PgStore, PgError>) -> String {
    format!("{input:?} was not refused up front: {got:?}")
}
