//! RELIABILITY E6 proven from the server's own log: a private cluster runs
//! with `log_statement = 'all'`, so every statement any session sends is in
//! its log, and each phase of this test is fenced by marker statements
//! (`SELECT 'eskit-e6:<phase>'`) sent on a connection of the test's own.
//!
//! - **Refused:** every §D name that the checks refuse (empty, NUL, 10 KB;
//!   and every hostile schema name) goes to every public entry point that
//!   takes a name: each call returns a typed validation error, and between
//!   the markers the log holds not one statement of any client session.
//! - **Bound, never spliced:** the §D names that are valid data (`a.b`,
//!   `'; DROP TABLE events;--`, `events" --`, U+202E, ...) are used as
//!   stream types and ids, event types, tags, tenants, idempotency keys,
//!   checkpoint, lock, dead-letter, queue, work-key and claim-owner names,
//!   change-relay topics and keys, and reasons. Everything round-trips,
//!   and every statement text of that phase is one that the same calls
//!   send with plain names: the names reached the server only as bind
//!   parameters.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::PrivateCluster;
use eskit_core::dcb::{AppendCondition, EventQuery, EventQueryReader, QueryItem, QueryOptions};
use eskit_core::error::StoreError;
use eskit_core::event::{
    EventType, ExpectedVersion, GlobalCursor, Metadata, NewEvent, Position, RawEvent, StreamId,
    StreamName, StreamType, Tag, TenantId,
};
use eskit_core::store::{
    AppendOptions, BoxFuture, CheckpointStore, ClaimOptions, ClaimStore, DeadLetterStore,
    EventStore, GlobalPager, LoadOptions, LockRegistry, NewWorkItem, ProjectionSink, ReadOptions,
    SinkError, StreamLifecycle, TenantScoped,
};
use eskit_pg::{PgError, PgOptions, PgProjection, PgStore};
use sqlx::{Connection, Executor, PgConnection};

type Error = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), Error>;

/// The settings that put every statement, with its parameters, in the log.
/// The line prefix names the kind of process, so that client sessions'
/// lines can be told from the server's own.
const LOG_SETTINGS: &[(&str, &str)] = &[
    ("log_statement", "all"),
    ("log_line_prefix", "<<%b|%p>> "),
    ("log_min_error_statement", "error"),
    ("log_parameter_max_length", "-1"),
];

/// What the prefix calls a client session.
const CLIENT: &str = "client backend";

/// Time for work a call left running (a lock release) to reach the log
/// before a phase's closing marker.
const SETTLE: Duration = Duration::from_millis(500);

/// A lease within the claim store's bounds.
const LEASE: Duration = Duration::from_secs(30);

/// §D names that every name check refuses.
fn refused_names() -> Vec<String> {
    vec![
        String::new(),
        "x\0y".to_owned(),
        "\0".to_owned(),
        "n".repeat(10_000),
    ]
}

/// §D's hostile names (stream names and configured table names); every one
/// is refused as a schema name.
fn hostile_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "a.b",
        "*",
        ">",
        "$JS.API",
        "../x",
        "a/b",
        "a\\b",
        "CON",
        "NUL",
        "x\0y",
        "\u{202e}abc",
        "\u{e9}",
        "e\u{301}",
        "'; DROP TABLE events;--",
        "events; DROP TABLE x",
        "events\" --",
        "Events",
        "pg_catalog",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    v.push("n".repeat(10_000));
    v.push("a".repeat(64));
    v.push(format!("{}x", "b".repeat(63)));
    v.push(format!("{}y", "b".repeat(63)));
    v
}

/// §D's hostile names that are valid data for the core's name checks.
fn hostile_data() -> Vec<String> {
    hostile_names()
        .into_iter()
        .filter(|n| !n.is_empty() && !n.contains('\0') && n.len() <= 64)
        .collect()
}

/// One entry of the server log: the kind of process and the text (with
/// continuation lines).
#[derive(Debug)]
struct Entry {
    process: String,
    text: String,
}

fn entries(log: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in log.lines() {
        let head = line
            .strip_prefix("<<")
            .and_then(|rest| rest.split_once(">> "))
            .and_then(|(tag, text)| tag.rsplit_once('|').map(|(process, _)| (process, text)));
        match (head, out.last_mut()) {
            (Some((process, text)), _) => out.push(Entry {
                process: process.to_owned(),
                text: text.to_owned(),
            }),
            (None, Some(last)) => {
                last.text.push('\n');
                last.text.push_str(line);
            }
            (None, None) => {}
        }
    }
    out
}

fn marker(label: &str) -> String {
    format!("SELECT 'eskit-e6:{label}'")
}

/// Sends the marker statement of `label` on the test's own connection.
async fn mark(conn: &mut PgConnection, label: &str) -> TestResult {
    conn.execute(marker(label).as_str()).await?;
    Ok(())
}

/// The entries between the markers `from` and `to`.
fn between<'a>(all: &'a [Entry], from: &str, to: &str) -> Result<&'a [Entry], Error> {
    let find = |label: &str| {
        let text = format!("statement: {}", marker(label));
        all.iter()
            .position(|e| e.text.ends_with(&text))
            .ok_or_else(|| format!("marker {label:?} is not in the server log"))
    };
    let (a, b) = (find(from)?, find(to)?);
    if b <= a {
        return Err(format!("marker {to:?} comes before {from:?}").into());
    }
    Ok(&all[a + 1..b])
}

/// The SQL text of a logged statement (without the prepared statement's
/// name), if the entry is one.
fn statement_text(e: &Entry) -> Option<&str> {
    if e.process != CLIENT {
        return None;
    }
    if let Some(sql) = e.text.strip_prefix("LOG:  statement: ") {
        return Some(sql);
    }
    e.text
        .strip_prefix("LOG:  execute ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(_, sql)| sql)
}

/// Whether the entry is the store's commit announcement or its parameter
/// line: a fixed statement whose one parameter is the schema's channel
/// (`eskit_` and 16 hex digits), never a caller's input. Standalone appends
/// announce after their commit from a task of their own, so an append of
/// one phase may be announced in the next.
fn is_announcement(e: &Entry) -> bool {
    // The channel, then the announced position (`$2`, decimal digits).
    let channel_param = e
        .text
        .strip_prefix("DETAIL:  parameters: $1 = 'eskit_")
        .and_then(|rest| rest.split_once("', $2 = '"))
        .is_some_and(|(hex, position)| {
            hex.len() == 16
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && position
                    .strip_suffix('\'')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        });
    channel_param || statement_text(e).is_some_and(|sql| sql.ends_with(", pg_notify($1, $2)"))
}

/// The calls made with a bad input, and those that did not refuse it.
#[derive(Default)]
struct Checks {
    calls: usize,
    wrong: Vec<String>,
}

impl Checks {
    /// Records `label` as wrong unless `r` is the typed refusal of a bad input.
    fn refused<T: std::fmt::Debug>(&mut self, label: &str, r: Result<T, StoreError>) {
        self.calls += 1;
        match r {
            Err(StoreError::Validation(_)) => {}
            other => self.wrong.push(format!("{label}: {other:?}")),
        }
    }

    /// Records `label` as wrong unless `r` is an error (the core's name
    /// constructors).
    fn err<T: std::fmt::Debug, E>(&mut self, label: &str, r: Result<T, E>) {
        self.calls += 1;
        if let Ok(v) = r {
            self.wrong.push(format!("{label}: accepted as {v:?}"));
        }
    }
}

/// A read model that writes nothing (the sink's name checks are tested).
struct Nothing;

impl PgProjection for Nothing {
    fn apply<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        _events: &'a [RawEvent],
    ) -> BoxFuture<'a, Result<(), eskit_core::error::BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

fn event(ty: &str) -> Result<NewEvent, Error> {
    Ok(NewEvent::new(EventType::new(ty)?, b"{}".to_vec()))
}

/// Every public entry point that takes a name, fed `bad`; the calls that
/// do not refuse it with a typed error go into `w`.
async fn refuse_everywhere(
    store: &PgStore,
    own: &mut PgConnection,
    sample: &RawEvent,
    bad: &str,
    w: &mut Checks,
) -> TestResult {
    let shown: String = format!("{bad:?}").chars().take(24).collect();
    let l = |what: &str| format!("{what}({shown})");
    let stream = StreamName::new("order", "o-1")?;
    let cursor = GlobalCursor::new(1, Position::new(1));

    // The core's name types: such a value cannot even be built.
    w.err(&l("StreamType::new"), StreamType::new(bad));
    w.err(&l("StreamId::new"), StreamId::new(bad));
    w.err(&l("StreamName::new"), StreamName::new(bad, bad));
    w.err(&l("EventType::new"), EventType::new(bad));
    w.err(&l("TenantId::new"), TenantId::new(bad));
    w.err(&l("Tag::new"), Tag::new(bad));
    w.err(
        &l("ClaimOptions::new owner"),
        ClaimOptions::new(bad, 1, LEASE),
    );

    // Appends and reads.
    let keyed = AppendOptions::new().with_idempotency_key(bad);
    w.refused(
        &l("append idempotency key"),
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event("Placed")?],
                keyed.clone(),
            )
            .await,
    );
    w.refused(
        &l("append_in idempotency key"),
        store
            .append_in(
                own,
                &stream,
                ExpectedVersion::Any,
                vec![event("Placed")?],
                keyed,
            )
            .await,
    );
    w.refused(
        &l("find_idempotent"),
        store.find_idempotent(&stream, bad).await,
    );
    let meta = AppendOptions::new().with_metadata(Metadata::new().with_extra(bad, "v"));
    if !bad.is_empty() {
        w.refused(
            &l("append metadata key"),
            store
                .append(&stream, ExpectedVersion::Any, vec![event("Placed")?], meta)
                .await,
        );
    }
    // A reason is text, not a name: its length is bounded, and it may not
    // hold a NUL (PostgreSQL's text cannot).
    if bad.len() > eskit_core::limits::MAX_REASON_BYTES || bad.contains('\0') {
        w.refused(&l("tombstone reason"), store.tombstone(&stream, bad).await);
        w.refused(&l("archive reason"), store.archive(&stream, bad).await);
    }

    // Checkpoints, also inside the caller's transaction and through a sink.
    let checkpoints = store.checkpoints();
    w.refused(&l("checkpoint load"), checkpoints.load(bad).await);
    w.refused(&l("checkpoint save"), checkpoints.save(bad, cursor).await);
    w.refused(
        &l("checkpoint save_in"),
        checkpoints.save_in(own, bad, cursor).await,
    );
    let sink = store.projection_sink(Nothing);
    w.refused(&l("sink cursor"), sink.cursor(bad).await);
    w.calls += 1;
    match sink.apply(bad, &[], cursor).await {
        Err(SinkError::Store(StoreError::Validation(_))) => {}
        other => w.wrong.push(format!("{}: {other:?}", l("sink apply"))),
    }

    // Locks.
    let locks = store.locks();
    w.refused(&l("lock try_acquire"), locks.try_acquire(bad).await);
    w.refused(&l("lock acquire"), locks.acquire(bad).await);

    // Dead letters.
    let letters = store.dead_letters();
    w.refused(
        &l("dead letter put"),
        letters.put(bad, sample, "boom", 1).await,
    );
    w.refused(&l("dead letter list"), letters.list(bad, 0, 10).await);

    // Work queues.
    let claims = store.claims();
    w.refused(
        &l("enqueue queue"),
        claims
            .enqueue(bad, vec![NewWorkItem::new("k", b"p".to_vec())])
            .await,
    );
    w.refused(
        &l("enqueue work key"),
        claims
            .enqueue("q", vec![NewWorkItem::new(bad, b"p".to_vec())])
            .await,
    );
    // Change relay.
    let relay = store.change_relay();
    w.refused(
        &l("relay broadcast topic"),
        relay.broadcast(bad, None).await,
    );
    w.refused(
        &l("relay broadcast key"),
        relay.broadcast("orders", Some(bad)).await,
    );
    w.refused(
        &l("claim queue"),
        claims.claim(bad, ClaimOptions::new("w", 1, LEASE)?).await,
    );
    Ok(())
}

/// The same calls a user makes with a name, all expected to work: the
/// name as stream type and id, event type, tag, tenant, idempotency key,
/// checkpoint, lock, dead-letter, queue, work-key and owner name, relay
/// topic and key, reason.
async fn use_everywhere(store: &PgStore, name: &str) -> TestResult {
    let fail = |what: &str| -> Error { format!("{what} with name {name:?}").into() };
    let stream = StreamName::new(name, name)?;
    let ty = EventType::new(name)?;
    let tag = Tag::new(name)?;
    let new = NewEvent::new(ty.clone(), b"{}".to_vec()).with_tags([tag.clone()]);
    let id = new.id();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![new],
            AppendOptions::new().with_idempotency_key(name),
        )
        .await?;
    let loaded = store.load(&stream, LoadOptions::new()).await?;
    let ok = loaded.len() == 1
        && loaded[0].id == id
        && loaded[0].stream == stream
        && loaded[0].event_type == ty
        && loaded[0].tags == [tag.clone()];
    if !ok {
        return Err(fail("load returned another event"));
    }
    if store.find_idempotent(&stream, name).await?.is_none() {
        return Err(fail("find_idempotent found nothing"));
    }
    let query = EventQuery::new().with_item(QueryItem::new().with_tags([tag]));
    let found = store.query(QueryOptions::from_start(query, 10)).await?;
    if !found.events.iter().any(|e| e.id == id) {
        return Err(fail("a tag query missed the event"));
    }
    // A tenant of that name, and its isolation.
    let tenant = store.for_tenant(TenantId::new(name)?);
    let theirs = StreamName::new(name, "tenant")?;
    tenant
        .append(
            &theirs,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(ty.clone(), b"{}".to_vec())],
            AppendOptions::new(),
        )
        .await?;
    if tenant.load(&theirs, LoadOptions::new()).await?.len() != 1
        || !store.load(&theirs, LoadOptions::new()).await?.is_empty()
    {
        return Err(fail("a tenant's stream is not its own"));
    }
    // Checkpoints, locks, dead letters, queues.
    let cursor = loaded[0].cursor();
    let checkpoints = store.checkpoints();
    checkpoints.save(name, cursor).await?;
    if checkpoints.load(name).await? != Some(cursor) {
        return Err(fail("the checkpoint did not round-trip"));
    }
    match store.locks().try_acquire(name).await? {
        Some(guard) => drop(guard),
        None => return Err(fail("a free lock was not granted")),
    }
    let letters = store.dead_letters();
    letters.put(name, &loaded[0], name, 1).await?;
    if letters.list(name, 0, 10).await?.len() != 1 {
        return Err(fail("the dead letter is not listed"));
    }
    let claims = store.claims();
    claims
        .enqueue(name, vec![NewWorkItem::new(name, b"p".to_vec())])
        .await?;
    let claimed = claims
        .claim(name, ClaimOptions::new(name, 1, LEASE)?)
        .await?;
    if claimed.len() != 1 {
        return Err(fail("the work item was not claimed"));
    }
    // A change relay's topic and key.
    let relay = store.change_relay();
    let id = relay.broadcast(name, Some(name)).await?;
    let relayed = relay.changes_after(id - 1, 1).await?;
    if relayed
        .first()
        .map(|c| (c.topic.as_str(), c.key.as_deref()))
        != Some((name, Some(name)))
    {
        return Err(fail("the relayed change did not round-trip"));
    }
    // A reason.
    store.tombstone(&stream, name).await?;
    if store.status(&stream).await?.reason.as_deref() != Some(name) {
        return Err(fail("the tombstone reason did not round-trip"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_reach_the_server_as_sql() -> TestResult {
    let cluster = PrivateCluster::start(LOG_SETTINGS)?;
    let url = cluster.url();
    let store = PgStore::connect(PgOptions::new(&url).with_schema("e6")).await?;
    let mut own = PgConnection::connect(&url).await?;
    let sample_stream = StreamName::new("order", "sample")?;
    store
        .append(
            &sample_stream,
            ExpectedVersion::NoStream,
            vec![event("Placed")?],
            AppendOptions::new(),
        )
        .await?;
    let sample = store
        .load(&sample_stream, LoadOptions::new())
        .await?
        .pop()
        .ok_or("the sample event is missing")?;

    // Phase 1: refused before any SQL.
    mark(&mut own, "refused-start").await?;
    let mut checks = Checks::default();
    for bad in refused_names() {
        refuse_everywhere(&store, &mut own, &sample, &bad, &mut checks).await?;
    }
    for bad in hostile_names() {
        checks.calls += 1;
        match PgStore::connect(PgOptions::new(&url).with_schema(bad.as_str())).await {
            Err(PgError::InvalidSchema { .. }) => {}
            other => checks.wrong.push(format!("schema {bad:?}: {other:?}")),
        }
    }
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "refused-end").await?;

    // Phase 2: hostile data, bound as parameters; plain names first, for
    // the statement texts the same calls send anyway.
    mark(&mut own, "plain-start").await?;
    let hostile = hostile_data();
    for n in 0..hostile.len() {
        use_everywhere(&store, &format!("plain_name_{n}")).await?;
    }
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "plain-end").await?;
    mark(&mut own, "hostile-start").await?;
    for name in &hostile {
        use_everywhere(&store, name).await?;
    }
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "hostile-end").await?;

    // The store's tables are whole.
    let all = GlobalPager::new(&store, ReadOptions::from_start(1000))
        .collect()
        .await?;
    let expected_events = 1 + 2 * hostile.len();
    let log = cluster.log()?;
    let parsed = entries(&log);

    let reached: Vec<&Entry> = between(&parsed, "refused-start", "refused-end")?
        .iter()
        .filter(|e| e.process == CLIENT && !is_announcement(e))
        .collect();
    let plain: BTreeSet<&str> = between(&parsed, "plain-start", "plain-end")?
        .iter()
        .filter_map(statement_text)
        .collect();
    let hostile_phase = between(&parsed, "hostile-start", "hostile-end")?;
    let spliced: BTreeSet<&str> = hostile_phase
        .iter()
        .filter(|e| !is_announcement(e))
        .filter_map(statement_text)
        .filter(|sql| !plain.contains(sql))
        .collect();
    // The log shows parameters, so it would show a name that was spliced.
    let bound = hostile_phase.iter().any(|e| {
        e.process == CLIENT
            && e.text.starts_with("DETAIL:  parameters: ")
            && e.text.contains("'''; DROP TABLE events;--'")
    });
    println!(
        "e6 (postgres): {} refused calls checked, {} reached the server; {} hostile names used \
         as data, {} statement texts with plain names, {} others with hostile ones",
        checks.calls,
        reached.len(),
        hostile.len(),
        plain.len(),
        spliced.len(),
    );
    let mut failures = Vec::new();
    if !checks.wrong.is_empty() {
        failures.push(format!(
            "calls that did not refuse a bad name with a typed error:\n  {}",
            checks.wrong.join("\n  ")
        ));
    }
    if !reached.is_empty() {
        failures.push(format!(
            "client statements logged while only bad names were passed:\n  {}",
            reached
                .iter()
                .map(|e| e.text.chars().take(300).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if !spliced.is_empty() {
        failures.push(format!(
            "statement texts that only hostile names produced:\n  {}",
            spliced.into_iter().collect::<Vec<_>>().join("\n  ")
        ));
    }
    if !bound {
        failures.push("the log shows no hostile name as a bind parameter".to_owned());
    }
    if plain.is_empty() {
        failures.push("the log shows no statement of the plain phase".to_owned());
    }
    if all.len() != expected_events {
        failures.push(format!(
            "the log holds {} events, expected {expected_events}",
            all.len()
        ));
    }
    store.close().await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

/// A standalone append without a condition is one statement on the wire
/// (no `BEGIN`/`COMMIT` round trips); a version conflict adds one read of
/// the head row. A conditional
/// append is four: `BEGIN`, the locks and head, the write that checks the
/// condition itself, `COMMIT`.
#[tokio::test]
async fn a_standalone_append_is_one_statement() -> TestResult {
    let cluster = PrivateCluster::start(LOG_SETTINGS)?;
    let url = cluster.url();
    let store = PgStore::connect(PgOptions::new(&url).with_schema("one")).await?;
    let mut own = PgConnection::connect(&url).await?;
    let stream = StreamName::new("order", "one")?;

    mark(&mut own, "one-start").await?;
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Placed")?],
            AppendOptions::new(),
        )
        .await?;
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "one-end").await?;

    mark(&mut own, "conflict-start").await?;
    let refused = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Placed")?],
            AppendOptions::new(),
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "conflict-end").await?;

    // A conditional append: the lock statement, then the write checks
    // the condition itself.
    let tagged =
        |ty: &str| -> Result<NewEvent, Error> { Ok(event(ty)?.with_tags([Tag::new("course:1")?])) };
    let query = EventQuery::new().with_item(QueryItem::new().with_tags([Tag::new("course:1")?]));
    let read = store
        .query(QueryOptions::from_start(query.clone(), 10))
        .await?;
    mark(&mut own, "condition-start").await?;
    store
        .append(
            &StreamName::new("course", "1")?,
            ExpectedVersion::Any,
            vec![tagged("Enrolled")?],
            AppendOptions::new().with_condition(AppendCondition::new(query.clone(), read.next)),
        )
        .await?;
    tokio::time::sleep(SETTLE).await;
    mark(&mut own, "condition-end").await?;
    // The same condition again fails: the write statement finds the event.
    let failed = store
        .append(
            &StreamName::new("course", "1")?,
            ExpectedVersion::Any,
            vec![tagged("Enrolled")?],
            AppendOptions::new().with_condition(AppendCondition::new(query, read.next)),
        )
        .await;
    store.close().await;

    let log = cluster.log()?;
    let parsed = entries(&log);
    let statements = |from: &str, to: &str| -> Result<Vec<String>, Error> {
        Ok(between(&parsed, from, to)?
            .iter()
            .filter(|e| !is_announcement(e))
            .filter_map(statement_text)
            .map(|s| s.chars().take(120).collect())
            .collect())
    };
    let one = statements("one-start", "one-end")?;
    let conflict = statements("conflict-start", "conflict-end")?;
    let conditional = statements("condition-start", "condition-end")?;
    assert_eq!(
        conditional.len(),
        4,
        "statements of a conditional append (BEGIN, locks and head, checked write, COMMIT): \
         {conditional:#?}"
    );
    assert!(
        matches!(failed, Err(StoreError::ConditionFailed { .. })),
        "{failed:?}"
    );
    println!(
        "a new-stream append sent {} statement(s); a conflicting one {}",
        one.len(),
        conflict.len()
    );
    assert_eq!(one.len(), 1, "statements of one append: {one:#?}");
    assert!(
        matches!(refused, Err(StoreError::WrongExpectedVersion { .. })),
        "{refused:?}"
    );
    // The one statement, then the head row read afresh names the version.
    assert_eq!(
        conflict.len(),
        2,
        "statements of a conflicting append: {conflict:#?}"
    );
    assert_eq!(store_events(&url).await?, 2);
    Ok(())
}

/// The events of schema `one`, counted on a connection of the test's own.
async fn store_events(url: &str) -> Result<i64, Error> {
    let mut conn = PgConnection::connect(url).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM one.events")
        .fetch_one(&mut conn)
        .await?;
    Ok(n)
}
