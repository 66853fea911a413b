//! DCB on SQLite: query reads answered from the tag index, and the append
//! condition checked on the writer thread.
//!
//! **Invariant**: an item with tags is answered from `eskit_event_tags`
//! (its primary key `(tag, position)` gives the positions of one tag in
//! order), never by scanning `eskit_events`; the event rows are then read by
//! position. Every event a query returns is checked against the query with
//! its own (checksummed) tags and type, so a damaged index row is
//! [`StoreError::Corrupt`], not a wrong answer.

use eskit_core::{
    dcb::{AppendCondition, EventQuery, QueryItem, QueryOptions},
    error::StoreError,
    event::{GlobalCursor, Position, RawEvent, Tags, TenantId},
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{corrupt, store_error};
use crate::kinds::{KindCache, KindReader};
use crate::row::{
    BatchBuilder, EVENT_COLUMN_COUNT, EVENT_COLUMNS, EventBatch, StreamCache, index_tag, tenant_key,
};
use crate::worker::{Part, PartSender};

/// The positions of the events matching `query` in `(?1, ?2]`, as a
/// compound select: one member per item, each in position order and
/// limited to `limit` rows, so a page reads at most `limit` index entries
/// per item. Parameters from `?3` on are appended to `params`.
///
/// The limit is written into the SQL, not bound: SQLite (with STAT4, as
/// rusqlite bundles it) marks a statement whose `LIMIT` is a parameter to
/// be prepared again on every new binding, which cost more than the read.
fn positions_sql(query: &EventQuery, tenant: &str, limit: i64, params: &mut Vec<Value>) -> String {
    let mut next = |v: Value| {
        params.push(v);
        format!("?{}", params.len() + 2)
    };
    let mut members = Vec::with_capacity(query.items().len());
    for item in query.items() {
        members.push(item_sql(item, tenant, limit, &mut next));
    }
    members.join(" UNION ")
}

/// A tag as the index keys it, as a parameter value.
fn tag_value(tenant: &str, tag: &str) -> Value {
    Value::Text(index_tag(tenant, tag).into_owned())
}

fn item_sql(
    item: &QueryItem,
    tenant: &str,
    limit: i64,
    next: &mut impl FnMut(Value) -> String,
) -> String {
    let types = if item.event_types().is_empty() {
        String::new()
    } else {
        let names: Vec<String> = item
            .event_types()
            .iter()
            .map(|t| next(Value::Text(t.as_str().to_owned())))
            .collect();
        format!(
            " AND ei.kind IN (SELECT kind FROM eskit_event_kinds WHERE event_type IN ({}))",
            names.join(", ")
        )
    };
    let Some((first, rest)) = item.tags().split_first() else {
        let t = next(Value::Text(tenant.to_owned()));
        return format!(
            "SELECT position FROM (SELECT ei.position FROM eskit_events ei \
             WHERE ei.position > ?1 AND ei.position <= ?2 AND ei.tenant = {t}{types} \
             ORDER BY ei.position LIMIT {limit})"
        );
    };
    let first = next(tag_value(tenant, first.as_str()));
    let mut joins = String::new();
    for (i, tag) in rest.iter().enumerate() {
        let p = next(tag_value(tenant, tag.as_str()));
        joins.push_str(&format!(
            " JOIN eskit_event_tags t{n} ON t{n}.tag = {p} AND t{n}.position = t0.position",
            n = i + 1
        ));
    }
    if !types.is_empty() {
        joins.push_str(" JOIN eskit_events ei ON ei.position = t0.position");
    }
    format!(
        "SELECT position FROM (SELECT t0.position FROM eskit_event_tags t0{joins} \
         WHERE t0.tag = {first} AND t0.position > ?1 AND t0.position <= ?2{types} \
         ORDER BY t0.position LIMIT {limit})"
    )
}

/// The SQL and parameters of a query read after `after`, up to `horizon`,
/// at most `limit` events; `None` for a query without items. One item (the
/// common case) is read with a plain join from the tag index to the events;
/// several through the compound select of their positions.
pub(crate) fn read_sql(
    query: &EventQuery,
    tenant: &str,
    after: i64,
    horizon: i64,
    limit: i64,
) -> Option<(String, Vec<Value>)> {
    let mut params = vec![Value::Integer(after), Value::Integer(horizon)];
    let mut extra = Vec::new();
    let sql = match query.items() {
        [] => return None,
        [item] => single_item_sql(item, tenant, limit, &mut extra),
        _ => {
            let positions = positions_sql(query, tenant, limit, &mut extra);
            format!(
                "SELECT {EVENT_COLUMNS}, e.stream FROM eskit_events e \
                 WHERE e.position IN ({positions}) ORDER BY e.position LIMIT {limit}"
            )
        }
    };
    params.extend(extra);
    Some((sql, params))
}

/// One item as a join: the first tag's index range drives, every other tag
/// is a primary-key lookup, then the event row and its stream by key.
fn single_item_sql(item: &QueryItem, tenant: &str, limit: i64, params: &mut Vec<Value>) -> String {
    let mut next = |v: Value| {
        params.push(v);
        format!("?{}", params.len() + 2)
    };
    let types = if item.event_types().is_empty() {
        String::new()
    } else {
        let names: Vec<String> = item
            .event_types()
            .iter()
            .map(|t| next(Value::Text(t.as_str().to_owned())))
            .collect();
        format!(
            " AND e.kind IN (SELECT kind FROM eskit_event_kinds WHERE event_type IN ({}))",
            names.join(", ")
        )
    };
    let Some((first, rest)) = item.tags().split_first() else {
        let t = next(Value::Text(tenant.to_owned()));
        return format!(
            "SELECT {EVENT_COLUMNS}, e.stream FROM eskit_events e \
             WHERE e.position > ?1 AND e.position <= ?2 AND e.tenant = {t}{types} \
             ORDER BY e.position LIMIT {limit}"
        );
    };
    let first = next(tag_value(tenant, first.as_str()));
    let mut joins = String::new();
    for (i, tag) in rest.iter().enumerate() {
        let p = next(tag_value(tenant, tag.as_str()));
        joins.push_str(&format!(
            " JOIN eskit_event_tags t{n} ON t{n}.tag = {p} AND t{n}.position = t0.position",
            n = i + 1
        ));
    }
    format!(
        "SELECT {EVENT_COLUMNS}, e.stream FROM eskit_event_tags t0{joins} \
         JOIN eskit_events e ON e.position = t0.position \
         WHERE t0.tag = {first} AND t0.position > ?1 AND t0.position <= ?2{types} \
         ORDER BY t0.position LIMIT {limit}"
    )
}

/// A query read on a reader connection: the horizon first, then the
/// matching events after the cursor up to it (as the global read does).
pub(crate) fn query_sync(
    c: &Connection,
    kinds: &KindCache,
    streams: &StreamCache,
    tenant: Option<&TenantId>,
    options: &QueryOptions,
    tx: &PartSender<EventBatch>,
) -> Result<(), StoreError> {
    let _read = crate::store::ReadTx::begin(c)?;
    let horizon = crate::store::horizon(c)?;
    if !tx.queue(Ok(Part::Horizon(horizon))) {
        return Ok(());
    }
    let after = options.after();
    if after.tx() > 0 || after.position().get() >= horizon {
        return Ok(());
    }
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let limit = i64::try_from(options.limit()).unwrap_or(0);
    let Some((sql, params)) = read_sql(
        options.query(),
        tenant_key(tenant),
        to_i64(after.position().get()),
        to_i64(horizon),
        limit,
    ) else {
        return Ok(());
    };
    let mut stmt = c.prepare_cached(&sql).map_err(store_error)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(store_error)?;
    let mut batch = BatchBuilder::new(KindReader::committed(kinds), 0, tenant.cloned())
        .with_shared_streams(streams);
    while let Some(row) = rows.next().map_err(store_error)? {
        // A query's events are spread over many streams; their names come
        // from the shared cache, and only a stream no read has met yet is
        // looked up (joining the streams table cost a search per row).
        let sid = crate::row::int_column(row, EVENT_COLUMN_COUNT)?;
        let stream = batch.stream(c, sid)?;
        batch.push(c, row, stream)?;
        if batch.is_full() && !tx.send(Ok(Part::Chunk(batch.take()))) {
            return Ok(());
        }
    }
    // `read_parts` sends the end right after: one wake-up for both.
    tx.queue(Ok(Part::Chunk(batch.finish())));
    Ok(())
}

/// Fails unless every event matches the query by its own type and tags.
pub(crate) fn check_matches(query: &EventQuery, events: &[RawEvent]) -> Result<(), StoreError> {
    let mut checked: Option<&RawEvent> = None;
    let mismatch = events.iter().find(|e| {
        // An event of the type of the one checked before it, sharing its
        // tags (a read hands consecutive events with the same stored tags
        // one list), matches as that one did: it matched.
        let same =
            checked.is_some_and(|c| Tags::ptr_eq(&c.tags, &e.tags) && c.event_type == e.event_type);
        checked = Some(e);
        !same && !query.matches_event(e)
    });
    match mismatch {
        None => Ok(()),
        Some(e) => Err(corrupt(format!(
            "the tag index names the event at position {}, which does not match the query",
            e.position
        ))),
    }
}

/// The first event after the condition's cursor that matches its query,
/// inside the writer's transaction: it sees the appends written earlier
/// in the same batch.
pub(crate) fn first_match(
    conn: &Connection,
    condition: &AppendCondition,
    tenant: &str,
) -> Result<Option<GlobalCursor>, StoreError> {
    let after = condition.after();
    if after.tx() > 0 || condition.query().items().is_empty() {
        return Ok(None);
    }
    let mut params = vec![
        Value::Integer(i64::try_from(after.position().get()).unwrap_or(i64::MAX)),
        Value::Integer(i64::MAX),
    ];
    let mut extra = Vec::new();
    let positions = positions_sql(condition.query(), tenant, 1, &mut extra);
    params.extend(extra);
    let sql = format!("SELECT min(position) FROM ({positions})");
    let first: Option<i64> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(rusqlite::params_from_iter(params), |r| r.get(0))
                .optional()
        })
        .map_err(store_error)?
        .flatten();
    first
        .map(|p| {
            u64::try_from(p)
                .map(|p| GlobalCursor::at(Position::new(p)))
                .map_err(|_| corrupt(format!("negative position {p}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::event::{EventType, Tag};

    fn plan(c: &Connection, sql: &str, params: Vec<Value>) -> Vec<String> {
        let mut stmt = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
    }

    #[test]
    fn query_statements_are_not_prepared_again_for_new_bindings() {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-query-reprepare-{}-{}",
            std::process::id(),
            eskit_core::event::Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("events.db");
        let store = crate::SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        eskit_core::rt::block_on(store.close());
        let c = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let t = |s: &str| Tag::new(s).unwrap_or_else(|e| panic!("{e}"));
        let mut stmt = None;
        for i in 0..5 {
            let query = EventQuery::from(QueryItem::new().with_tags([t(&format!("course:{i}"))]));
            let (sql, params) = read_sql(&query, "", i, 1000 + i, 100).unwrap_or_default();
            let s = stmt.get_or_insert_with(|| c.prepare(&sql).unwrap_or_else(|e| panic!("{e}")));
            let mut rows = s
                .query(rusqlite::params_from_iter(params))
                .unwrap_or_else(|e| panic!("{e}"));
            while rows.next().unwrap_or_else(|e| panic!("{e}")).is_some() {}
        }
        let reprepared = stmt.map_or(0, |s| s.get_status(rusqlite::StatementStatus::RePrepare));
        assert_eq!(reprepared, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tagged_items_search_the_tag_index_and_never_scan_events() {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-query-plan-{}-{}",
            std::process::id(),
            eskit_core::event::Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("events.db");
        let store = crate::SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        eskit_core::rt::block_on(store.close());
        let c = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let t = |s: &str| Tag::new(s).unwrap_or_else(|e| panic!("{e}"));
        let ty = |s: &str| EventType::new(s).unwrap_or_else(|e| panic!("{e}"));
        let query = EventQuery::new()
            .with_item(QueryItem::new().with_tags([t("course:c-1")]))
            .with_item(
                QueryItem::new()
                    .with_tags([t("student:s-1"), t("term:2026")])
                    .with_event_types([ty("Enrolled"), ty("Left")]),
            );
        let (sql, params) = read_sql(&query, "", 0, i64::MAX, 100).unwrap_or_default();
        let steps = plan(&c, &sql, params);
        let joined = steps.join("\n");
        assert!(
            steps
                .iter()
                .filter(
                    |s| s.contains("t0") && s.contains("USING PRIMARY KEY (tag=? AND position>?")
                )
                .count()
                == 2,
            "{joined}"
        );
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN e") || s.starts_with("SCAN t")),
            "{joined}"
        );
        let single = EventQuery::from(
            QueryItem::new()
                .with_tags([t("student:s-1"), t("term:2026")])
                .with_event_types([ty("Enrolled")]),
        );
        let (sql, params) = read_sql(&single, "", 0, i64::MAX, 100).unwrap_or_default();
        let steps = plan(&c, &sql, params);
        let joined = steps.join("\n");
        assert!(
            steps.first().is_some_and(|s| s.starts_with("SEARCH t0 USING PRIMARY KEY (tag=? AND position>?")),
            "{joined}"
        );
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN") || s.contains("TEMP B-TREE")),
            "{joined}"
        );
        let condition = AppendCondition::new(query, GlobalCursor::START);
        let mut params = vec![Value::Integer(0), Value::Integer(i64::MAX)];
        let mut extra = Vec::new();
        let positions = positions_sql(condition.query(), "", 1, &mut extra);
        params.extend(extra);
        let steps = plan(
            &c,
            &format!("SELECT min(position) FROM ({positions})"),
            params,
        );
        let joined = steps.join("\n");
        assert!(
            !steps
                .iter()
                .any(|s| s.starts_with("SCAN e") || s.starts_with("SCAN t")),
            "{joined}"
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
