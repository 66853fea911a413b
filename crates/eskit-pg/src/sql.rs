//! The SQL text of every statement, built once per store from the
//! validated schema name (the only part not sent as a bind parameter).

use crate::options::SchemaName;

/// The columns of a stream's load, in the order [`crate::row`] decodes:
/// the event without its stream and tenant, which the statement fixes.
/// The transaction id comes as `xid8` in binary form (8 bytes), not as
/// text: no cast on the server, no string per row on the client.
///
/// An empty tag array comes as `NULL`: the server then sends 4 bytes
/// instead of running the array's output function (about a tenth of a
/// 1,000-event load's statement time for untagged events).
pub(crate) const LOAD_COLUMNS: &str = "e.position, e.tx, e.version, e.event_id, e.event_type, \
     e.schema_version, e.codec, e.payload, e.recorded_at, e.metadata, \
     CASE WHEN cardinality(e.tags) = 0 THEN NULL ELSE e.tags END AS tags";

/// The event columns every other read selects: [`LOAD_COLUMNS`], then
/// stream type, stream id and tenant.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.tx, e.version, e.event_id, e.event_type, \
     e.schema_version, e.codec, e.payload, e.recorded_at, e.metadata, \
     CASE WHEN cardinality(e.tags) = 0 THEN NULL ELSE e.tags END AS tags, \
     e.stream_type, e.stream_id, e.tenant";

/// The column of a read's rows holding the horizon (as text): after the
/// head (2), the event columns (14) and the ordering key (1).
pub(crate) const HORIZON_COLUMN: usize = 17;

/// Statements of one store.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) schema: String,
    pub(crate) lock_head: String,
    pub(crate) write: String,
    pub(crate) write_quiet: String,
    /// A standalone append without a condition in one statement (see
    /// [`Sql::new`]).
    pub(crate) append_one: String,
    pub(crate) lock_events: String,
    pub(crate) drop_empty_head: String,
    pub(crate) idempotency: String,
    pub(crate) load: String,
    pub(crate) versions: String,
    pub(crate) stream_row: String,
    pub(crate) status: String,
    pub(crate) lock_stream: String,
    pub(crate) set_state: String,
    pub(crate) restore: String,
    pub(crate) delete_events: String,
    pub(crate) keep_deleted_high: String,
    pub(crate) delete_keys: String,
    pub(crate) delete_snapshot: String,
    pub(crate) mark_deleted: String,
    pub(crate) read: String,
    pub(crate) head: String,
    /// [`Sql::load`] naming tenant `$1` for the row-level security
    /// policies in the same statement (see [`scoped_read`]).
    pub(crate) load_scoped: String,
    /// [`Sql::read`] naming tenant `$6` in the same statement.
    pub(crate) read_scoped: String,
}

impl Sql {
    pub(crate) fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let setting = crate::schema::TENANT_SETTING;
        let stream = "tenant = $1 AND stream_type = $2 AND stream_id = $3";
        let stream_e = "e.tenant = $1 AND e.stream_type = $2 AND e.stream_id = $3";
        // The batch insert of an append (see `write`), up to its last
        // `FROM` item.
        let write_batch = format!(
            "WITH {} SELECT pg_current_xact_id()::text AS tx_text, array_agg(i.position ORDER BY i.version) AS positions, min(i.version) AS first FROM ins i, ",
            write_ctes(&s, "true")
        );
        // The first stored id of a batch's ids (`$n`), probed one id at a
        // time: `event_id = ANY($n)` is planned as a sequential scan while
        // the table is small and has no statistics, and the prepared
        // statement's generic plan keeps that scan as the table grows (each
        // append then read the whole table), while an equality on one id
        // is planned as a probe of the unique index at any size.
        let first_stored = |n: usize| {
            format!(
                "SELECT f.id FROM unnest(${n}::bytea[]) AS x(id) CROSS JOIN LATERAL \
                 (SELECT e.event_id AS id FROM {s}.events e WHERE e.event_id = x.id LIMIT 1) AS f \
                 LIMIT 1"
            )
        };
        let probe = first_stored(12);
        let duplicate = first_stored(7);
        Self {
            schema: s.clone(),
            // Takes the DCB advisory locks (sorted, shared for written tags,
            // exclusive for queried ones) before the head row lock, then
            // creates or locks the stream's head row and returns it, with
            // whether the stream order check fails and the first of the
            // append's event ids already stored (found before the insert, so
            // a refused append burns no position).
            //
            // It also names the transaction's tenant for the row-level
            // security policies (CTE `sc`), so an append costs no statement
            // more: the row the upsert writes is made from `sc`'s row, so
            // the setting is in place before any policy check of this
            // statement and of every later one in the transaction. Were a
            // check ever evaluated before it, it would see the setting a
            // fresh transaction starts with, "no tenant": it fails closed
            // (a refusal or fewer rows), never shows another tenant's row.
            // Another tenant's head row (found by the unique index, which
            // row-level security does not hide) is left alone by the
            // `WHERE` of the update: no row comes back.
            lock_head: format!(
                "WITH sc AS MATERIALIZED (SELECT set_config('{setting}', $1, true) AS t), \
                 l AS (SELECT count(CASE WHEN u.x THEN pg_advisory_xact_lock(u.k1, u.k2)::text \
                 ELSE pg_advisory_xact_lock_shared(u.k1, u.k2)::text END) AS n \
                 FROM unnest($4::int4[], $5::int4[], $6::bool[]) AS u(k1, k2, x)) \
                 INSERT INTO {s}.streams AS h (tenant, stream_type, stream_id) \
                 SELECT $1, $2, $3 FROM sc, l WHERE sc.t IS NOT NULL \
                 ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = h.version \
                 WHERE h.tenant = $1 \
                 RETURNING h.version, h.state, h.tenant = $1 AS owned, \
                 (h.last_tx IS NOT NULL AND h.last_tx > pg_current_xact_id()) AS behind, \
                 ({duplicate}) AS duplicate"
            ),
            // One statement for the whole batch: the events from parallel
            // arrays, the head's new version and the idempotency entry.
            write: format!("{write_batch}(SELECT pg_notify($17, '')) AS n"),
            // The same without the `NOTIFY` (standalone appends announce
            // their commit after it, see `crate::feed::announce`).
            write_quiet: format!("{write_batch}(SELECT $17::text) AS n"),
            // A standalone append without a condition, in one statement of
            // its own (autocommit: one round trip instead of `BEGIN`, the
            // two statements above and `COMMIT`). It appends only when
            // every check passes on the head row, and otherwise writes
            // nothing but, at most, an empty head row; the store then runs
            // the full transaction (`lock_head`, `write`), which finds and
            // reports the reason. The checks:
            //
            // - tenant, lifecycle state (active only; anything else takes
            //   the full path), stream order (`last_tx`) and the expected
            //   version (`$6`: 0 any, 1 no stream, 2 stream exists, 3
            //   exactly `$7`) are the `WHERE` of the upsert's update, which
            //   sees the newest committed head row and locks it;
            // - a stream without a head row is created with the batch's
            //   version when the expectation allows a new stream (`$6` 0 or
            //   1), else with version 0 (the empty head row the store drops
            //   after the full path refused the append);
            // - a stored event id of the batch or its idempotency key
            //   (`d`, looked up before any position is taken, so a refused
            //   append burns none, as in the full path) refuses it too; one
            //   committed after the statement began is a unique violation:
            //   the statement, and with it everything it wrote, is rolled
            //   back.
            //
            // `h.version > 0` is "the append passed": an updated row has at
            // least one event more, an inserted row is 0 exactly when the
            // expectation refused a new stream. The tenant is named for the
            // row-level security policies as in `lock_head` (`sc`), and the
            // tags' shared DCB locks are taken before the head row lock.
            append_one: format!(
                "WITH sc AS MATERIALIZED (SELECT set_config('{setting}', $1, true) AS t), \
                 l AS (SELECT count(pg_advisory_xact_lock_shared(u.k1, u.k2)::text) AS n \
                 FROM unnest($4::int4[], $5::int4[]) AS u(k1, k2)), \
                 d AS MATERIALIZED (SELECT EXISTS ({probe}) \
                 OR ($19::text IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.idempotency k \
                 WHERE k.stream_type = $2 AND k.stream_id = $3 AND k.key = $19)) AS dup FROM sc), \
                 h AS (INSERT INTO {s}.streams AS h (tenant, stream_type, stream_id, version, last_tx) \
                 SELECT $1, $2, $3, CASE WHEN $6::int2 <= 1 AND NOT d.dup THEN $8::int8 ELSE 0 END, \
                 CASE WHEN $6::int2 <= 1 AND NOT d.dup THEN pg_current_xact_id() END \
                 FROM sc, l, d WHERE sc.t IS NOT NULL \
                 ON CONFLICT (stream_type, stream_id) DO UPDATE \
                 SET version = h.version + $8::int8, last_tx = pg_current_xact_id() \
                 WHERE h.tenant = $1 AND h.state = 1 AND NOT (SELECT d.dup FROM d) \
                 AND (h.last_tx IS NULL OR h.last_tx < pg_current_xact_id()) \
                 AND CASE $6::int2 WHEN 0 THEN true WHEN 1 THEN h.version = 0 \
                 WHEN 2 THEN h.version > 0 ELSE h.version = $7::int8 END \
                 RETURNING h.version - $8::int8 AS base, h.version > 0 AS ok), \
                 ins AS (\
                 INSERT INTO {s}.events (position, tx, tenant, stream_type, stream_id, version, \
                 event_id, event_type, schema_version, codec, payload, recorded_at, metadata, tags) \
                 SELECT nextval('{s}.positions'), pg_current_xact_id(), $1, $2, $3, h.base + u.ord, \
                 u.id, u.ty, u.sv, u.codec, u.payload, $9, $10, \
                 coalesce(($11::text[])[u.t0:u.t1], '{{}}') \
                 FROM h, unnest($12::bytea[], $13::text[], $14::int8[], $15::text[], $16::bytea[], \
                 $17::int4[], $18::int4[]) WITH ORDINALITY AS u(id, ty, sv, codec, payload, t0, t1, ord) \
                 WHERE h.ok \
                 RETURNING position, version), \
                 idem AS (INSERT INTO {s}.idempotency \
                 (tenant, stream_type, stream_id, key, first_version, event_count) \
                 SELECT $1, $2, $3, $19, h.base + 1, $8::int4 FROM h \
                 WHERE h.ok AND $19::text IS NOT NULL) \
                 SELECT h.ok, w.* FROM h, (SELECT pg_current_xact_id()::text AS tx_text, array_agg(i.position ORDER BY i.version) AS positions, min(i.version) AS first FROM ins i) AS w"
            ),
            lock_events: format!("LOCK TABLE {s}.events IN SHARE ROW EXCLUSIVE MODE"),
            // The head row a refused append of a group commit created for a
            // stream that has no event, no state and no past (see
            // `crate::group`); another tenant's row never matches.
            drop_empty_head: format!(
                "DELETE FROM {s}.streams WHERE {stream} AND version = 0 AND state = 1 \
                 AND last_tx IS NULL AND reason IS NULL AND changed_at IS NULL"
            ),
            idempotency: format!(
                "SELECT first_version, event_count FROM {s}.idempotency WHERE {stream} AND key = $4"
            ),
            load: format!(
                "SELECT {LOAD_COLUMNS} FROM {s}.events e \
                 WHERE e.tenant = $1 AND e.stream_type = $2 AND e.stream_id = $3 \
                 AND e.version >= $4 AND e.version <= $5 \
                 AND (cardinality($6::text[]) = 0 OR e.event_type = ANY($6::text[])) \
                 ORDER BY e.version LIMIT $7"
            ),
            load_scoped: format!(
                "SELECT x.* FROM (SELECT set_config('{setting}', $1, true) AS t OFFSET 0) AS sc \
                 CROSS JOIN LATERAL (SELECT {LOAD_COLUMNS} FROM {s}.events e \
                 WHERE e.tenant = sc.t AND e.stream_type = $2 AND e.stream_id = $3 \
                 AND e.version >= $4 AND e.version <= $5 \
                 AND (cardinality($6::text[]) = 0 OR e.event_type = ANY($6::text[])) \
                 ORDER BY e.version LIMIT $7 OFFSET 0) AS x"
            ),
            versions: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events e \
                 WHERE e.tenant = $1 AND e.stream_type = $2 AND e.stream_id = $3 \
                 AND e.version BETWEEN $4 AND $5 ORDER BY e.version"
            ),
            stream_row: format!("SELECT version, state FROM {s}.streams WHERE {stream}"),
            status: format!(
                "SELECT version, state, reason, changed_at FROM {s}.streams WHERE {stream}"
            ),
            lock_stream: format!(
                "SELECT version, state FROM {s}.streams WHERE {stream} FOR UPDATE"
            ),
            set_state: format!(
                "UPDATE {s}.streams SET state = $4, reason = $5, changed_at = $6 WHERE {stream}"
            ),
            restore: format!(
                "UPDATE {s}.streams SET state = 1, reason = NULL, changed_at = $4 WHERE {stream}"
            ),
            keep_deleted_high: format!(
                "INSERT INTO {s}.deleted_high AS d (tenant, tx, position) \
                 SELECT $1, e.tx, e.position FROM {s}.events e WHERE {stream_e} \
                 ORDER BY e.tx DESC, e.position DESC LIMIT 1 \
                 ON CONFLICT (tenant) DO UPDATE SET tx = excluded.tx, position = excluded.position \
                 WHERE (d.tx, d.position) < (excluded.tx, excluded.position)"
            ),
            delete_events: format!("DELETE FROM {s}.events WHERE {stream}"),
            delete_keys: format!("DELETE FROM {s}.idempotency WHERE {stream}"),
            delete_snapshot: format!("DELETE FROM {s}.snapshots WHERE {stream}"),
            mark_deleted: format!(
                "UPDATE {s}.streams SET state = 4, changed_at = $4 WHERE {stream}"
            ),
            // Reads below the horizon (the oldest transaction still running
            // when the statement's snapshot was taken) in (tx, position)
            // order, with the newest cursor below it as the head, in one
            // statement so both use the same snapshot.
            read: global_read(&s, false),
            read_scoped: global_read(&s, true),
            head: format!(
                "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
                 {}",
                head_below(&s, "$1")
            ),
        }
    }

    /// A DCB query read: [`Sql::read`]'s shape with `matches` (built by
    /// [`crate::dcb::match_clause`] from bind parameters from `$5` on) as
    /// the filter; `$3` is the limit, `$4` the tenant.
    pub(crate) fn query(&self, matches: &str) -> String {
        read_with(&self.schema, "$4", matches, "$3")
    }

    /// [`Sql::query`] naming tenant `$4` in the same statement.
    pub(crate) fn query_scoped(&self, matches: &str) -> String {
        scoped_read(&self.schema, "$4", matches, "$3")
    }

    /// The first event of tenant `$3` matching `matches` (parameters from
    /// `$4` on) after a cursor, committed or the caller's own, without the
    /// horizon: an append condition must see everything committed.
    pub(crate) fn first_match(&self, matches: &str) -> String {
        let s = &self.schema;
        format!(
            "SELECT e.tx::text, e.position FROM {s}.events e \
             WHERE e.tenant = $3 AND (e.tx, e.position) > ($1::text::xid8, $2) AND ({matches}) \
             ORDER BY e.tx, e.position LIMIT 1"
        )
    }
}

/// The CTEs of an append's batch write: the events from parallel arrays
/// (`ins`), the head's new version (`head`) and the idempotency entry
/// (`idem`), each only where `guard` holds.
fn write_ctes(s: &str, guard: &str) -> String {
    format!(
        "ins AS (\
         INSERT INTO {s}.events (position, tx, tenant, stream_type, stream_id, version, \
         event_id, event_type, schema_version, codec, payload, recorded_at, metadata, tags) \
         SELECT nextval('{s}.positions'), pg_current_xact_id(), $1, $2, $3, $4 + u.ord, \
         u.id, u.ty, u.sv, u.codec, u.payload, $5, $6, \
         coalesce(($7::text[])[u.t0:u.t1], '{{}}') \
         FROM unnest($8::bytea[], $9::text[], $10::int8[], $11::text[], $12::bytea[], \
         $13::int4[], $14::int4[]) WITH ORDINALITY AS u(id, ty, sv, codec, payload, t0, t1, ord) \
         WHERE {guard} \
         RETURNING position, version), \
         head AS (UPDATE {s}.streams SET version = $4 + $15, last_tx = pg_current_xact_id() \
         WHERE stream_type = $2 AND stream_id = $3 AND {guard}), \
         idem AS (INSERT INTO {s}.idempotency \
         (tenant, stream_type, stream_id, key, first_version, event_count) \
         SELECT $1, $2, $3, $16, $4 + 1, $15 WHERE $16::text IS NOT NULL AND {guard})"
    )
}

impl Sql {
    /// The batch write of an append with a condition, checked in the same
    /// statement: the first event of tenant `$1` matching `matches`
    /// (parameters from `$20` on) after the cursor (`$18`, `$19`) is
    /// columns 0-1 of the first row, and when there is one nothing is
    /// written (one row, the event columns null); else the rows of
    /// [`Sql::write`] from column 2 on. It runs after the statement that
    /// took the condition's locks, so its snapshot sees every commit of
    /// a writer that held them (READ COMMITTED: a snapshot per
    /// statement); `notify` as [`Sql::write`] against [`Sql::write_quiet`].
    pub(crate) fn write_checked(&self, matches: &str, notify: bool) -> String {
        let s = &self.schema;
        let announce = if notify {
            "pg_notify($17, '')"
        } else {
            "$17::text"
        };
        format!(
            "WITH c AS MATERIALIZED (SELECT e.tx::text AS ctx, e.position AS cpos \
             FROM {s}.events e WHERE e.tenant = $1 \
             AND (e.tx, e.position) > ($18::text::xid8, $19) AND ({matches}) \
             ORDER BY e.tx, e.position LIMIT 1), {} \
             SELECT c.ctx, c.cpos, w.* FROM (SELECT 1) AS one LEFT JOIN c ON true, \
             (SELECT pg_current_xact_id()::text AS tx_text, array_agg(i.position ORDER BY i.version) AS positions, min(i.version) AS first FROM ins i) AS w, \
             (SELECT {announce}) AS n",
            write_ctes(s, "NOT EXISTS (SELECT 1 FROM c)")
        )
    }
}

/// A read below the horizon, in (tx, position) order after the cursor
/// `($1, $2)`, of tenant `tenant` passing `filter`, at most `limit`: with the
/// newest cursor below it as the head and the horizon itself, in one
/// statement so all use the same snapshot. Always one row at least (the
/// head and horizon with no event when the page is empty).
fn read_with(s: &str, tenant: &str, filter: &str, limit: &str) -> String {
    let head = head_below(s, tenant);
    format!(
        "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
         hd AS ({head}), \
         p AS (SELECT {EVENT_COLUMNS}, e.tx AS txo FROM {s}.events e, h \
         WHERE e.tenant = {tenant} AND (e.tx, e.position) > ($1::text::xid8, $2) \
         AND e.tx < h.xmin AND ({filter}) \
         ORDER BY e.tx, e.position LIMIT {limit}) \
         SELECT hd.htx, hd.hpos, p.*, (SELECT h.xmin::text FROM h) AS horizon \
         FROM (SELECT 1) AS one \
         LEFT JOIN hd ON true LEFT JOIN p ON true ORDER BY p.txo, p.position"
    )
}

/// The global read ([`Sql::read`], or [`Sql::read_scoped`] naming tenant
/// `$6` for row-level security): [`read_with`]'s shape, with the page
/// from the schema's `read_page` function (its plan walks the cursor index
/// in order whatever the table's statistics, see
/// `crate::schema::READ_PAGE`). Parameters: the cursor `($1, $2)`, the
/// event types `$3`, the stream type `$4`, the limit `$5`, the tenant `$6`.
/// Under row-level security the function runs in a `LATERAL` item
/// referencing `h.t`, so after the setting is in place (as
/// [`scoped_read`] explains).
///
/// The rows come in no promised order: the planner cannot know that the
/// function's output is sorted and would sort the page again (about a
/// fifth of a 1,000-event page's server time), so `crate::store`'s `page`
/// puts the events in cursor order on the client (one pass on rows
/// already in order).
fn global_read(s: &str, scoped: bool) -> String {
    let setting = crate::schema::TENANT_SETTING;
    let (h, hd, tenant) = if scoped {
        (
            format!(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, \
                 set_config('{setting}', $6, true) AS t"
            ),
            format!(
                "SELECT y.htx, y.hpos FROM h CROSS JOIN LATERAL (\
                 SELECT x.t::text AS htx, x.p AS hpos FROM (\
                 (SELECT e.tx AS t, e.position AS p FROM {s}.events e \
                 WHERE e.tenant = h.t AND e.tx < h.xmin \
                 ORDER BY e.tx DESC, e.position DESC LIMIT 1) \
                 UNION ALL (SELECT d.tx, d.position FROM {s}.deleted_high d \
                 WHERE d.tenant = h.t AND d.tx < h.xmin)\
                 ) AS x ORDER BY x.t DESC, x.p DESC LIMIT 1 OFFSET 0) AS y"
            ),
            "h.t",
        )
    } else {
        (
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin".to_owned(),
            head_below(s, "$6"),
            "$6",
        )
    };
    format!(
        "WITH h AS MATERIALIZED ({h}), hd AS ({hd}), \
         p AS (SELECT {EVENT_COLUMNS}, e.tx AS txo FROM h CROSS JOIN LATERAL \
         {s}.read_page({tenant}, $1::text::xid8, $2, $3::text[], $4::text, $5, h.xmin) AS e) \
         SELECT hd.htx, hd.hpos, p.*, (SELECT h.xmin::text FROM h) AS horizon \
         FROM (SELECT 1) AS one \
         LEFT JOIN hd ON true LEFT JOIN p ON true"
    )
}

/// A tenant's newest cursor below the horizon (CTE `h`): of its live
/// events and of its hard-deleted ones, as `(htx text, hpos bigint)`; no
/// row when none.
fn head_below(s: &str, tenant: &str) -> String {
    format!(
        "SELECT x.t::text AS htx, x.p AS hpos FROM (\
         (SELECT e.tx AS t, e.position AS p FROM {s}.events e, h \
         WHERE e.tenant = {tenant} AND e.tx < h.xmin \
         ORDER BY e.tx DESC, e.position DESC LIMIT 1) \
         UNION ALL (SELECT d.tx, d.position FROM {s}.deleted_high d, h \
         WHERE d.tenant = {tenant} AND d.tx < h.xmin)\
         ) AS x ORDER BY x.t DESC, x.p DESC LIMIT 1"
    )
}

/// [`read_with`] for a tenant handle under row-level security, naming the
/// tenant (`tenant`, a parameter) for the policies in the same statement,
/// so the read costs no round trip more.
///
/// Why the setting is in place before any policy check reads it: the CTE
/// `h` computes the horizon and calls `set_config` (transaction-local: the
/// statement's own implicit transaction, or the caller's). Every scan of a
/// tenant table is a `LATERAL` subquery referencing `h.t`, fenced by
/// `OFFSET 0` so the planner cannot flatten it into a join it could
/// reorder: each must run as the inner side of a nested loop whose outer
/// side is `h`, so it starts (and computes its index keys, policy quals
/// included) only after `h`'s row, and with it the setting, exists. Were a
/// check ever evaluated earlier, it would see the setting a fresh
/// transaction has, "no tenant", and return fewer rows: it fails closed,
/// never shows another tenant's row (the library's own `tenant = h.t`
/// filter stands as well).
fn scoped_read(s: &str, tenant: &str, filter: &str, limit: &str) -> String {
    let setting = crate::schema::TENANT_SETTING;
    format!(
        "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, \
         set_config('{setting}', {tenant}, true) AS t), \
         hd AS (SELECT y.htx, y.hpos FROM h CROSS JOIN LATERAL (\
         SELECT x.t::text AS htx, x.p AS hpos FROM (\
         (SELECT e.tx AS t, e.position AS p FROM {s}.events e \
         WHERE e.tenant = h.t AND e.tx < h.xmin \
         ORDER BY e.tx DESC, e.position DESC LIMIT 1) \
         UNION ALL (SELECT d.tx, d.position FROM {s}.deleted_high d \
         WHERE d.tenant = h.t AND d.tx < h.xmin)\
         ) AS x ORDER BY x.t DESC, x.p DESC LIMIT 1 OFFSET 0) AS y), \
         p AS (SELECT z.* FROM h CROSS JOIN LATERAL (\
         SELECT {EVENT_COLUMNS}, e.tx AS txo FROM {s}.events e \
         WHERE e.tenant = h.t AND (e.tx, e.position) > ($1::text::xid8, $2) \
         AND e.tx < h.xmin AND ({filter}) \
         ORDER BY e.tx, e.position LIMIT {limit} OFFSET 0) AS z) \
         SELECT hd.htx, hd.hpos, p.*, (SELECT h.xmin::text FROM h) AS horizon \
         FROM (SELECT 1) AS one \
         LEFT JOIN hd ON true LEFT JOIN p ON true ORDER BY p.txo, p.position"
    )
}
