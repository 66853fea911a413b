//! The embedded, versioned migrations and the schema they build.
//!
//! Each migration runs once per schema, in its own transaction, recorded in
//! `eskit_migrations`. Connects that race are serialized by a transaction
//! advisory lock on the schema's name, so two processes opening a fresh
//! schema at once do not both create it.

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres, Row};

use crate::error::{PgError, store_error};
use crate::options::SchemaName;

/// The migrations, oldest first; `{s}` stands for the quoted schema name.
/// Never edit a released one: add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", INITIAL),
    (2, "dead letters", DEAD_LETTERS),
    (3, "work items", WORK_ITEMS),
    (4, "row level security", ROW_SECURITY),
    (5, "change relay", CHANGES),
    (6, "tag index of tagged events only", TAGGED_ONLY),
    (7, "global read page", READ_PAGE),
];

/// The setting that names the transaction's tenant for the row-level
/// security policies: set with `set_config(TENANT_SETTING, $1, true)`
/// (transaction-local, a bind parameter). Unset or empty means "no tenant".
pub(crate) const TENANT_SETTING: &str = "eskit.tenant";

/// Every table that holds tenant rows: each has a `tenant text NOT NULL`
/// column and the `tenant_rows` policy of [`ROW_SECURITY`].
pub(crate) const TENANT_TABLES: &[&str] = &[
    "streams",
    "events",
    "idempotency",
    "snapshots",
    "checkpoints",
    "deleted_high",
    "dead_letters",
    "work_items",
];

/// The tables without tenant rows the store writes (so an application role
/// needs write grants on them too).
pub(crate) const SHARED_TABLES: &[&str] = &["lock_tokens", "changes"];

/// Row-level security on every table of [`TENANT_TABLES`]: PostgreSQL
/// itself keeps a transaction to the rows of the tenant named by the
/// `eskit.tenant` setting ([`TENANT_SETTING`]), for reads (`USING`) and
/// for the rows it writes (`WITH CHECK`). An unset or empty setting means
/// the rows of no tenant (`tenant = ''`), so such a transaction sees no
/// tenant's row and cannot write one. `FORCE` makes the policies bind the
/// tables' owner too; superusers and `BYPASSRLS` roles still bypass them
/// (the store then relies on its own filters, see the crate docs).
///
/// **Adding a table that holds tenant rows** (the pattern, in the new
/// table's migration): give it `tenant text NOT NULL DEFAULT ''`, then
///
/// ```sql
/// ALTER TABLE {s}.new_table ENABLE ROW LEVEL SECURITY;
/// ALTER TABLE {s}.new_table FORCE ROW LEVEL SECURITY;
/// CREATE POLICY tenant_rows ON {s}.new_table
///     USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
///     WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
/// ```
///
/// add its name to [`TENANT_TABLES`] (so [`grant`] gives the application
/// role access to it and the tests check its policy), and make every
/// statement on it run on a connection the store scoped with
/// `crate::store::Scoped::session` or `crate::store::set_tenant`. A table
/// without tenant rows goes into [`SHARED_TABLES`] instead.
const ROW_SECURITY: &str = r#"
ALTER TABLE {s}.streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.streams FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.streams
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.events
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.idempotency
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.snapshots
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.checkpoints
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.deleted_high ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.deleted_high FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.deleted_high
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.dead_letters
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''));
ALTER TABLE {s}.work_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.work_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON {s}.work_items
    USING (tenant = coalesce(current_setting('eskit.tenant', true), ''))
    WITH CHECK (tenant = coalesce(current_setting('eskit.tenant', true), ''))
"#;

/// The change relay's table ([`PgChangeRelay`](crate::PgChangeRelay)):
/// store-wide, without tenant rows (so without a policy; see
/// [`SHARED_TABLES`]); ids commit in id order (broadcasts take turns on an
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

/// The tag index keeps only events that have tags: an untagged event (most
/// appends of a stream-based application) no longer writes an entry for
/// its empty array. That entry cost about 160 of 700 bytes of WAL per
/// event of an untagged batch. A tag query names the index's predicate
/// ([`TAGGED`]) so the planner can use it; an empty tag array is never
/// what a query asks for. On a large table this rebuilds the index while
/// holding writes back, once.
const TAGGED_ONLY: &str = r#"
DROP INDEX {s}.events_tags;
CREATE INDEX events_tags ON {s}.events USING gin (tags) WHERE tags <> '{}'
"#;

/// The predicate of the tag index (see [`TAGGED_ONLY`]), for the queries
/// that must match it.
pub(crate) const TAGGED: &str = "e.tags <> '{}'";

/// One page of a global read, in cursor order, for
/// [`crate::sql::Sql::read`]: the tenant's events after the cursor below the
/// horizon, passing the type and stream type filters. A function so that
/// its plan is made with bitmap scans and sorts off: the one plan left
/// walks `events_cursor` in order and stops after `p_limit` rows. Planned
/// inline, a table never analyzed since a bulk load (a fresh schema a
/// catch-up reads right after seeding) got estimates of a few rows, a
/// bitmap scan of every row after the cursor and a sort of them: 90 ms a
/// page of 1,000 against 1 ms. Invoker's rights: row-level security
/// applies inside as outside. No `;` in the body (the migration runner
/// splits on it).
const READ_PAGE: &str = r#"
CREATE FUNCTION {s}.read_page(p_tenant text, p_tx xid8, p_position bigint, p_types text[],
    p_stream_type text, p_limit bigint, p_horizon xid8) RETURNS SETOF {s}.events
LANGUAGE sql STABLE
SET enable_bitmapscan = off SET enable_sort = off
AS $$
SELECT e.* FROM {s}.events e
WHERE e.tenant = p_tenant AND (e.tx, e.position) > (p_tx, p_position) AND e.tx < p_horizon
AND (cardinality(p_types) = 0 OR e.event_type = ANY(p_types))
AND (p_stream_type IS NULL OR e.stream_type = p_stream_type)
ORDER BY e.tx, e.position LIMIT p_limit
$$
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

/// The names of the tables the migrations create in a store's schema (a
/// read model's tables must not take them).
pub(crate) fn store_tables() -> impl Iterator<Item = &'static str> {
    MIGRATIONS.iter().flat_map(|(_, _, sql)| {
        sql.split("CREATE TABLE {s}.").skip(1).filter_map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
        })
    })
}

/// Creates the schema if needed and applies the migrations it lacks.
/// Takes its arguments by value: with borrowed ones the compiler cannot
/// prove the future `Send` for every lifetime.
pub(crate) async fn migrate(
    mut conn: PoolConnection<Postgres>,
    schema: SchemaName,
) -> Result<(), PgError> {
    let s = schema.quoted();
    // An up-to-date schema needs no DDL (nor the privileges for it): an
    // application role that may only read and write the tables connects here.
    let current = applied(&mut conn, &schema).await.map_err(store_error)?;
    match current {
        Some(v) if v == latest() => return Ok(()),
        Some(v) if v > latest() => {
            return Err(PgError::SchemaTooNew {
                found: v,
                known: latest(),
            });
        }
        _ => {}
    }
    match migrate_locked(&mut conn, &s, &schema).await {
        Err(PgError::Store(e)) if is_insufficient_privilege(&e) => Err(PgError::NotMigrated {
            found: current.unwrap_or(0),
            needed: latest(),
        }),
        other => other,
    }
}

/// SQLSTATE `insufficient_privilege`: the role may not run the DDL.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn is_insufficient_privilege(e: &eskit_core::error::StoreError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(sqlx::Error::Database(db)) = err.downcast_ref::<sqlx::Error>() {
            return db.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE);
        }
        source = err.source();
    }
    false
}

/// The newest migration applied to the schema, `None` when it has no
/// migrations table (yet, or none this role can see).
async fn applied(conn: &mut PgConnection, schema: &SchemaName) -> Result<Option<i32>, sqlx::Error> {
    let table = format!("{}.eskit_migrations", schema.quoted());
    let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query(&format!("SELECT coalesce(max(version), 0) FROM {table}"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some(row.try_get(0)?))
}

/// Applies the missing migrations under the schema's migration lock.
async fn migrate_locked(
    conn: &mut PgConnection,
    s: &str,
    schema: &SchemaName,
) -> Result<(), PgError> {
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
            let text = statement.replace("{s}", s);
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

/// Grants `role` what the store needs on the schema and nothing more:
/// `USAGE` on the schema, `SELECT` on `eskit_migrations`, `SELECT`,
/// `INSERT`, `UPDATE` and `DELETE` on the store's tables, `USAGE` on its
/// sequences, `EXECUTE` on its functions. No DDL, no `TRUNCATE`, no ownership: row-level security binds
/// such a role. Run by the schema's owner after [`migrate`].
pub(crate) async fn grant(
    conn: &mut PgConnection,
    schema: &SchemaName,
    role: &crate::options::RoleName,
) -> Result<(), PgError> {
    let s = schema.quoted();
    let r = role.quoted();
    let mut statements = vec![
        format!("GRANT USAGE ON SCHEMA {s} TO {r}"),
        format!("GRANT SELECT ON {s}.eskit_migrations TO {r}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}"),
        // The store's functions (`read_page`): PUBLIC may run new functions
        // by default, but a database may have revoked that.
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}"),
    ];
    for table in TENANT_TABLES.iter().chain(SHARED_TABLES) {
        statements.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.{table} TO {r}"
        ));
    }
    let mut tx = conn.begin().await.map_err(store_error)?;
    for text in statements {
        sqlx::query(&text)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(())
}
