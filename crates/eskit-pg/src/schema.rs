//! The embedded, versioned migrations and the schema they build.
//!
//! Each migration runs once per schema, in its own transaction, recorded in
//! `eskit_migrations`. Connects that race are serialized by a transaction
//! advisory lock on the schema's name, so two processes opening a fresh
//! schema at once do not both create it.

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres, Row};

use crate::error::{PgError, store_error};
use crate::options::SchemaName;

/// The migrations, oldest first; `{s}` stands for the quoted schema name.
/// Never edit a released one: add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", INITIAL),
    (2, "dead letters", DEAD_LETTERS),
    (3, "work items", WORK_ITEMS),
    (4, "change relay", CHANGES),
];

/// The change relay's table ([`PgChangeRelay`](crate::PgChangeRelay)):
/// store-wide, ids committed in id order (broadcasts take turns on an
/// advisory lock).
const CHANGES: &str = r#"
CREATE TABLE {s}.changes (
    id         bigserial PRIMARY KEY,
    origin     text   NOT NULL,
    topic      text   NOT NULL,
    key        text,
    created_at bigint NOT NULL
);
"#;

/// The claim store's work queues. `due` is when a pending item may be
/// claimed or a claimed item's lease runs out (`NULL` once done or dead);
/// `token` grows with every claim, so a stale claim matches no row.
const WORK_ITEMS: &str = r#"
CREATE TABLE {s}.work_items (
    id         bigserial PRIMARY KEY,
    tenant     text     NOT NULL DEFAULT '',
    queue      text     NOT NULL,
    key        text     NOT NULL,
    payload    bytea    NOT NULL,
    metadata   bytea,
    state      smallint NOT NULL,
    due        bigint,
    owner      text,
    attempts   bigint   NOT NULL DEFAULT 0,
    last_error text,
    token      bigint   NOT NULL DEFAULT 0,
    CONSTRAINT work_items_key UNIQUE (tenant, queue, key)
);
CREATE INDEX work_items_due ON {s}.work_items (tenant, queue, due, id) WHERE due IS NOT NULL;
"#;

/// Events a subscription gave up on, each a copy of the event with the
/// error, the attempts and when (the event may be deleted from the log
/// later; the letter keeps it).
const DEAD_LETTERS: &str = r#"
CREATE TABLE {s}.dead_letters (
    id             bigserial PRIMARY KEY,
    tenant         text    NOT NULL DEFAULT '',
    subscription   text    NOT NULL,
    error          text    NOT NULL,
    attempts       bigint  NOT NULL,
    failed_at      bigint  NOT NULL,
    position       bigint  NOT NULL,
    tx             xid8    NOT NULL,
    stream_type    text    NOT NULL,
    stream_id      text    NOT NULL,
    version        bigint  NOT NULL,
    event_id       bytea   NOT NULL,
    event_type     text    NOT NULL,
    schema_version bigint  NOT NULL,
    codec          text    NOT NULL,
    payload        bytea   NOT NULL,
    recorded_at    bigint  NOT NULL,
    metadata       bytea,
    tags           text[]  NOT NULL DEFAULT '{}'
);
CREATE INDEX dead_letters_subscription ON {s}.dead_letters (tenant, subscription, id);
"#;

/// The first migration: events, stream heads, idempotency entries,
/// snapshots, checkpoints and lock tokens.
///
/// - `events.position` comes from a sequence when the row is inserted, so
///   it is unique and never reused, but not committed in order; `tx` (the
///   writing transaction's `pg_current_xact_id()`) is what makes global
///   reads gap-free (see `docs/ordering.md`).
/// - `streams` holds one row per stream: the version check locks and reads
///   it instead of scanning the stream's events. `last_tx` is the
///   transaction of the stream's newest event (the stream-order check).
/// - `UNIQUE (stream_type, stream_id, version)` is the last safety net
///   behind the head row lock; a violation becomes a version conflict.
/// - `tenant` is `''` for no tenant (a `TenantId` is never empty). A stream
///   name is unique in the store and owned by the tenant that created it;
///   every read filters on the handle's tenant, so another tenant's rows are
///   invisible, and writes to another tenant's stream are refused.
/// - `deleted_high` keeps each tenant's newest cursor of a hard-deleted event, so
///   the head (and a caught-up reader's resume cursor) never moves back
///   below events a reader may already have passed.
/// - `metadata` is `bytea` holding the core's flat JSON wire shape: with
///   `jsonb` every read would pay to turn it back into text, and nothing
///   queries inside it.
const INITIAL: &str = r#"
CREATE TABLE {s}.streams (
    tenant      text     NOT NULL DEFAULT '',
    stream_type text     NOT NULL,
    stream_id   text     NOT NULL,
    version     bigint   NOT NULL DEFAULT 0,
    state       smallint NOT NULL DEFAULT 1,
    reason      text,
    changed_at  bigint,
    last_tx     xid8,
    PRIMARY KEY (stream_type, stream_id)
);
CREATE SEQUENCE {s}.positions AS bigint MINVALUE 1;
CREATE TABLE {s}.events (
    position       bigint  PRIMARY KEY,
    tx             xid8    NOT NULL,
    tenant         text    NOT NULL DEFAULT '',
    stream_type    text    NOT NULL,
    stream_id      text    NOT NULL,
    version        bigint  NOT NULL,
    event_id       bytea   NOT NULL CHECK (octet_length(event_id) = 16),
    event_type     text    NOT NULL,
    schema_version bigint  NOT NULL,
    codec          text    NOT NULL,
    payload        bytea   NOT NULL,
    recorded_at    bigint  NOT NULL,
    metadata       bytea,
    tags           text[]  NOT NULL DEFAULT '{}',
    CONSTRAINT events_event_id UNIQUE (event_id),
    CONSTRAINT events_stream_version UNIQUE (stream_type, stream_id, version)
);
CREATE INDEX events_cursor ON {s}.events (tenant, tx, position);
CREATE INDEX events_tags ON {s}.events USING gin (tags);
CREATE TABLE {s}.idempotency (
    tenant        text    NOT NULL DEFAULT '',
    stream_type   text    NOT NULL,
    stream_id     text    NOT NULL,
    key           text    NOT NULL,
    first_version bigint  NOT NULL,
    event_count   integer NOT NULL,
    PRIMARY KEY (stream_type, stream_id, key)
);
CREATE TABLE {s}.snapshots (
    tenant         text    NOT NULL DEFAULT '',
    stream_type    text    NOT NULL,
    stream_id      text    NOT NULL,
    version        bigint  NOT NULL,
    schema_version bigint  NOT NULL,
    codec          text    NOT NULL,
    state          bytea   NOT NULL,
    created_at     bigint  NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);
CREATE TABLE {s}.checkpoints (
    tenant     text   NOT NULL DEFAULT '',
    name       text   NOT NULL,
    tx         bigint NOT NULL,
    position   bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE {s}.deleted_high (
    tenant   text   PRIMARY KEY,
    tx       xid8   NOT NULL,
    position bigint NOT NULL
);
CREATE TABLE {s}.lock_tokens (
    name  text   PRIMARY KEY,
    token bigint NOT NULL
);
"#;

/// The newest migration this crate knows.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Creates the schema if needed and applies the migrations it lacks.
/// Takes its arguments by value: with borrowed ones the compiler cannot
/// prove the future `Send` for every lifetime.
pub(crate) async fn migrate(
    mut conn: PoolConnection<Postgres>,
    schema: SchemaName,
) -> Result<(), PgError> {
    let s = schema.quoted();
    let lock_name = format!("eskit-migrate:{schema}");
    let mut tx = conn.begin().await.map_err(store_error)?;
    // Serialize concurrent migrations of the same schema.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(lock_name)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {s}.eskit_migrations (\
         version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    let row = sqlx::query(&format!(
        "SELECT coalesce(max(version), 0) FROM {s}.eskit_migrations"
    ))
    .fetch_one(&mut *tx)
    .await
    .map_err(store_error)?;
    let applied: i32 = row.try_get(0).map_err(store_error)?;
    if applied > latest() {
        return Err(PgError::SchemaTooNew {
            found: applied,
            known: latest(),
        });
    }
    for &(version, name, sql) in MIGRATIONS {
        if version <= applied {
            continue;
        }
        // One statement at a time (the migrations hold no `;` but between
        // statements): prepared statements keep to the extended protocol.
        for statement in sql.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let text = statement.replace("{s}", &s);
            sqlx::query(&text)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.eskit_migrations (version, name) VALUES ($1, $2)"
        ))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(())
}
