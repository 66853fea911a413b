//! Idempotency keys: retries write nothing and return the original records.

use std::fmt;
use std::sync::Arc;

use eskit_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use eskit_core::{
    error::{CodecError, StoreError, ValidationError},
    event::{AppendResult, ExpectedVersion, Metadata, NewEvent, StreamName, Version},
    handler::{CommandHandler, CommandOptions, Decider, HandleError, Handled},
    store::{AppendOptions, DynEventStore, EventStore, LoadOptions},
    typed::{DomainEvent, EventCodec, EventSchema, TypedStore},
};

use super::{
    Ctx, EVENTS, Failure, LIFECYCLE, Outcome, Scenario, ensure, ensure_eq, ev, evs, expect_err,
    scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![EVENTS;
        "idempotency.retry_returns_original_records" => retry,
        "idempotency.retry_with_stale_expected_version" => retry_stale,
        "idempotency.retry_after_later_appends" => retry_after_later,
        "idempotency.different_payload_conflicts" => different_payload,
        "idempotency.different_event_count_conflicts" => different_count,
        "idempotency.different_event_type_conflicts" => different_type,
        "idempotency.key_scoped_to_stream" => scoped,
        "idempotency.key_stored_in_metadata" => stored,
        "idempotency.key_given_in_metadata" => key_in_metadata,
        "idempotency.concurrent_duplicates_write_once" => concurrent,
        "idempotency.invalid_key_rejected" => invalid_key,
        "idempotency.find_returns_the_stored_events" => find_stored,
        "idempotency.command_retry_after_other_commands" => command_retry,
    ]
    .into_iter()
    .chain(scenario_list![LIFECYCLE;
        "idempotency.find_after_delete_is_none" => find_after_delete,
    ])
    .collect()
}

async fn keyed(
    c: &Ctx,
    s: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    key: &str,
) -> Result<AppendResult, StoreError> {
    c.events()
        .append(
            s,
            expected,
            events,
            AppendOptions::new().with_idempotency_key(key),
        )
        .await
}

async fn retry(c: Ctx) -> Outcome {
    let s = stream("idem-retry")?;
    let events = evs(3, "Paid", "p")?;
    let first = keyed(&c, &s, ExpectedVersion::NoStream, events.clone(), "pay-1").await?;
    ensure!(!first.deduplicated, "first append reported as deduplicated");
    let before = c.load_all(&s).await?;
    // A retry carries the same content; ids may be new (a rebuilt command).
    let again: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent::new(e.event_type().clone(), e.payload().to_vec()))
        .collect();
    let second = keyed(&c, &s, ExpectedVersion::Any, again, "pay-1").await?;
    ensure!(second.deduplicated, "retry not reported as deduplicated");
    ensure_eq!(
        second.records,
        first.records,
        "records returned by the retry"
    );
    ensure_eq!(c.load_all(&s).await?, before, "stream after the retry");
    let third = keyed(&c, &s, ExpectedVersion::Any, events, "pay-1").await?;
    ensure!(
        third.deduplicated,
        "second retry not reported as deduplicated"
    );
    ensure_eq!(
        third.records,
        first.records,
        "records returned by the second retry"
    );
    ensure_eq!(
        c.events().stream_version(&s).await?,
        Version::new(3),
        "version after retries"
    );
    Ok(())
}

async fn retry_stale(c: Ctx) -> Outcome {
    // The classic unknown-outcome retry: the first attempt committed, the
    // caller retries with the expected version it used before.
    let s = stream("idem-stale")?;
    let events = evs(1, "Opened", "o")?;
    let first = keyed(&c, &s, ExpectedVersion::NoStream, events.clone(), "open").await?;
    let second = keyed(&c, &s, ExpectedVersion::NoStream, events, "open").await;
    match second {
        Ok(r) => {
            ensure!(r.deduplicated, "retry not reported as deduplicated");
            ensure_eq!(r.records, first.records, "records returned by the retry");
        }
        Err(e) => {
            return Err(Failure(format!(
                "retry with the same key and the stale expected version NoStream: expected the original records, got error {}",
                eskit_core::error::error_chain(&e)
            )));
        }
    }
    Ok(())
}

async fn retry_after_later(c: Ctx) -> Outcome {
    let s = stream("idem-later")?;
    let events = evs(2, "E", "k")?;
    let first = keyed(&c, &s, ExpectedVersion::Any, events.clone(), "k1").await?;
    c.append(&s, ExpectedVersion::Any, evs(3, "Other", "o")?)
        .await?;
    let again = keyed(&c, &s, ExpectedVersion::Any, events, "k1").await?;
    ensure!(
        again.deduplicated,
        "retry after later appends not deduplicated"
    );
    ensure_eq!(
        again.records,
        first.records,
        "records returned by the retry"
    );
    ensure_eq!(c.load_all(&s).await?.len(), 5, "events in the stream");
    Ok(())
}

async fn conflict_case(c: &Ctx, id: &str, first: Vec<NewEvent>, second: Vec<NewEvent>) -> Outcome {
    let s = stream(id)?;
    keyed(c, &s, ExpectedVersion::Any, first, "same-key").await?;
    let before = c.load_all(&s).await?;
    let e = expect_err!(
        keyed(c, &s, ExpectedVersion::Any, second, "same-key").await,
        StoreError::IdempotencyConflict { .. },
        "the same key with different events"
    );
    if let StoreError::IdempotencyConflict { stream: es, key } = &e {
        ensure_eq!(es, &s, "stream in the error");
        ensure_eq!(key.as_str(), "same-key", "key in the error");
    }
    ensure!(
        !e.is_conflict(),
        "an idempotency conflict must not be retried as a version conflict"
    );
    ensure_eq!(
        c.load_all(&s).await?,
        before,
        "stream after the rejected append"
    );
    Ok(())
}

async fn different_payload(c: Ctx) -> Outcome {
    conflict_case(&c, "idem-payload", vec![ev("E", "a")?], vec![ev("E", "b")?]).await
}

async fn different_count(c: Ctx) -> Outcome {
    conflict_case(
        &c,
        "idem-count",
        vec![ev("E", "a")?],
        vec![ev("E", "a")?, ev("E", "a")?],
    )
    .await
}

async fn different_type(c: Ctx) -> Outcome {
    conflict_case(&c, "idem-type", vec![ev("E", "a")?], vec![ev("F", "a")?]).await
}

async fn scoped(c: Ctx) -> Outcome {
    let a = stream("idem-scope-a")?;
    let b = stream("idem-scope-b")?;
    let ra = keyed(&c, &a, ExpectedVersion::Any, vec![ev("E", "x")?], "shared").await?;
    let rb = keyed(&c, &b, ExpectedVersion::Any, vec![ev("E", "x")?], "shared").await?;
    ensure!(
        !ra.deduplicated && !rb.deduplicated,
        "a key used on another stream deduplicated"
    );
    ensure_eq!(
        c.load_all(&b).await?.len(),
        1,
        "events in the second stream"
    );
    Ok(())
}

async fn stored(c: Ctx) -> Outcome {
    let s = stream("idem-stored")?;
    keyed(
        &c,
        &s,
        ExpectedVersion::Any,
        evs(2, "E", "x")?,
        "stored-key",
    )
    .await?;
    for e in c.load_all(&s).await? {
        ensure_eq!(
            e.metadata.idempotency_key(),
            Some("stored-key"),
            "idempotency key in the metadata of event {}",
            e.version
        );
    }
    Ok(())
}

async fn key_in_metadata(c: Ctx) -> Outcome {
    let s = stream("idem-meta")?;
    let opts =
        || AppendOptions::new().with_metadata(Metadata::new().with_idempotency_key("meta-key"));
    let events = evs(1, "E", "x")?;
    let first = c
        .events()
        .append(&s, ExpectedVersion::Any, events.clone(), opts())
        .await?;
    let second = c
        .events()
        .append(&s, ExpectedVersion::Any, events, opts())
        .await?;
    ensure!(
        second.deduplicated,
        "a key given in the metadata did not deduplicate"
    );
    ensure_eq!(
        second.records,
        first.records,
        "records returned by the retry"
    );
    Ok(())
}

async fn concurrent(c: Ctx) -> Outcome {
    let s = stream("idem-concurrent")?;
    let writers = c.stress().writers.max(2);
    let events = evs(2, "Charged", "c")?;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (c2, s, events) = (c.clone(), s.clone(), events.clone());
            c.spawn(async move { keyed(&c2, &s, ExpectedVersion::Any, events, "charge-1").await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    let written = results.iter().filter(|r| !r.deduplicated).count();
    ensure_eq!(
        written,
        1,
        "appends that wrote, of {writers} concurrent duplicates"
    );
    let first = &results[0].records;
    ensure!(
        results.iter().all(|r| &r.records == first),
        "duplicates returned different records"
    );
    ensure_eq!(
        c.load_all(&s).await?.len(),
        2,
        "events after concurrent duplicates"
    );
    Ok(())
}

async fn invalid_key(c: Ctx) -> Outcome {
    let s = stream("idem-invalid")?;
    let long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for key in [String::new(), long] {
        expect_err!(
            keyed(&c, &s, ExpectedVersion::Any, evs(1, "E", "x")?, &key).await,
            StoreError::Validation(ValidationError::InvalidIdempotencyKey { .. }),
            "idempotency key of {} bytes",
            key.len()
        );
    }
    let max = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
    keyed(&c, &s, ExpectedVersion::Any, evs(1, "E", "x")?, &max).await?;
    ensure_eq!(
        c.load_all(&s).await?.len(),
        1,
        "events after rejected keys and one maximal key"
    );
    Ok(())
}

async fn find_stored(c: Ctx) -> Outcome {
    let s = stream("idem-find")?;
    let other = stream("idem-find-other")?;
    let options = AppendOptions::new()
        .with_idempotency_key("find-1")
        .with_metadata(Metadata::new().with_correlation_id("first"));
    c.append(&s, ExpectedVersion::NoStream, evs(1, "Before", "b")?)
        .await?;
    let first = c
        .events()
        .append(&s, ExpectedVersion::Any, evs(2, "Keyed", "k")?, options)
        .await?;
    c.append(&s, ExpectedVersion::Any, evs(2, "After", "a")?)
        .await?;
    let stored = c
        .events()
        .load(
            &s,
            LoadOptions::new()
                .with_from(Version::new(2))
                .with_to(Version::new(3)),
        )
        .await?;
    let found = c.events().find_idempotent(&s, "find-1").await?;
    ensure_eq!(found, Some(stored.clone()), "events found under the key");
    let records: Vec<_> = stored
        .iter()
        .map(eskit_core::event::RawEvent::record)
        .collect();
    ensure_eq!(records, first.records, "records of the found events");
    // A retry with other metadata changes nothing of what is stored.
    let retry = AppendOptions::new()
        .with_idempotency_key("find-1")
        .with_metadata(Metadata::new().with_correlation_id("retry"));
    let again = c
        .events()
        .append(&s, ExpectedVersion::Any, evs(2, "Keyed", "k")?, retry)
        .await?;
    ensure!(again.deduplicated, "retry not reported as deduplicated");
    ensure_eq!(
        c.events().find_idempotent(&s, "find-1").await?,
        Some(stored),
        "events found under the key after a retry"
    );
    ensure_eq!(
        c.events().find_idempotent(&s, "never-used").await?,
        None,
        "events found under an unused key"
    );
    ensure_eq!(
        c.events().find_idempotent(&other, "find-1").await?,
        None,
        "events found under the key on a stream that never used it"
    );
    expect_err!(
        c.events().find_idempotent(&s, "").await,
        StoreError::Validation(ValidationError::InvalidIdempotencyKey { .. }),
        "looking up an empty key"
    );
    Ok(())
}

async fn find_after_delete(c: Ctx) -> Outcome {
    let s = stream("idem-find-deleted")?;
    keyed(&c, &s, ExpectedVersion::NoStream, evs(2, "E", "x")?, "gone").await?;
    c.lifecycle()?.dyn_delete(&s).await?;
    ensure_eq!(
        c.events().find_idempotent(&s, "gone").await?,
        None,
        "events found under a key of a deleted stream"
    );
    Ok(())
}

/// A bank account for the command-retry scenario: creating, updating with
/// derived state (each deposit records the balance after it) and closing
/// commands, and notes that are accepted in any state.
struct Account;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AccountState {
    open: bool,
    closed: bool,
    balance: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountCommand {
    Open,
    Deposit(u64),
    Close,
    Note,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountEvent {
    Opened,
    Deposited { amount: u64, balance: u64 },
    Closed { balance: u64 },
    Noted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    AlreadyOpen,
    NotOpen,
    AlreadyClosed,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyOpen => "already open",
            Self::NotOpen => "not open",
            Self::AlreadyClosed => "already closed",
        })
    }
}

impl std::error::Error for Refused {}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Deposited { .. } => "Deposited",
            Self::Closed { .. } => "Closed",
            Self::Noted => "Noted",
        }
    }

    fn event_types() -> &'static [&'static str] {
        &["Opened", "Deposited", "Closed", "Noted"]
    }
}

impl Decider for Account {
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = Refused;

    fn initial_state(&self) -> AccountState {
        AccountState::default()
    }

    fn decide(&self, s: &AccountState, c: &AccountCommand) -> Result<Vec<AccountEvent>, Refused> {
        match c {
            AccountCommand::Open if s.open || s.closed => Err(Refused::AlreadyOpen),
            AccountCommand::Open => Ok(vec![AccountEvent::Opened]),
            AccountCommand::Deposit(_) | AccountCommand::Close if !s.open => Err(Refused::NotOpen),
            AccountCommand::Deposit(_) | AccountCommand::Close if s.closed => {
                Err(Refused::AlreadyClosed)
            }
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited {
                amount: *amount,
                balance: s.balance.saturating_add(*amount),
            }]),
            AccountCommand::Close => Ok(vec![AccountEvent::Closed { balance: s.balance }]),
            AccountCommand::Note => Ok(vec![AccountEvent::Noted]),
        }
    }

    fn evolve(&self, mut s: AccountState, e: &AccountEvent) -> AccountState {
        match e {
            AccountEvent::Opened => s.open = true,
            AccountEvent::Deposited { balance, .. } => s.balance = *balance,
            AccountEvent::Closed { .. } => s.closed = true,
            AccountEvent::Noted => {}
        }
        s
    }
}

/// Numbers as little-endian bytes: nothing for `Opened` and `Noted`, the
/// balance for `Closed`, amount and balance for `Deposited`.
struct AccountCodec;

fn read_u64(bytes: &[u8], at: usize, event_type: &str) -> Result<u64, CodecError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| CodecError::decode(Some(event_type), "payload too short"))
}

impl EventCodec<AccountEvent> for AccountCodec {
    fn name(&self) -> &'static str {
        "le64"
    }

    fn encode(&self, e: &AccountEvent, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match e {
            AccountEvent::Opened | AccountEvent::Noted => {}
            AccountEvent::Deposited { amount, balance } => {
                out.extend(amount.to_le_bytes());
                out.extend(balance.to_le_bytes());
            }
            AccountEvent::Closed { balance } => out.extend(balance.to_le_bytes()),
        }
        Ok(())
    }

    fn decode(&self, event_type: &str, b: &[u8]) -> Result<AccountEvent, CodecError> {
        match event_type {
            "Opened" => Ok(AccountEvent::Opened),
            "Noted" => Ok(AccountEvent::Noted),
            "Deposited" => Ok(AccountEvent::Deposited {
                amount: read_u64(b, 0, event_type)?,
                balance: read_u64(b, 8, event_type)?,
            }),
            "Closed" => Ok(AccountEvent::Closed {
                balance: read_u64(b, 0, event_type)?,
            }),
            other => Err(CodecError::UnknownEventType {
                event_type: other.to_owned(),
            }),
        }
    }
}

type AccountHandler = CommandHandler<Account, Arc<dyn DynEventStore>>;

async fn run(
    handler: &AccountHandler,
    s: &StreamName,
    command: AccountCommand,
    options: &CommandOptions,
) -> Result<Handled<Account>, Failure> {
    handler
        .handle_with(s, &command, options)
        .await
        .map_err(|e| match e {
            HandleError::Rejected(r) => Failure(format!("{command:?} rejected: {r}")),
            HandleError::Store(e) => Failure::from(e),
            other => Failure(format!("{command:?} failed: {other}")),
        })
}

async fn command_retry(c: Ctx) -> Outcome {
    let handler = CommandHandler::new(
        Account,
        TypedStore::new(c.events().clone(), EventSchema::new(AccountCodec)),
    );
    let s = stream("idem-command")?;
    let keyed = |key: &str, correlation: &str| {
        CommandOptions::new()
            .with_idempotency_key(key)
            .with_metadata(Metadata::new().with_correlation_id(correlation))
    };
    let no_key = CommandOptions::new();
    // Each command, then an unrelated command, then the client's retry of
    // the first with its key (and a new correlation id): the retry gets the
    // first outcome, although deciding again would refuse it (open, close)
    // or compute another balance (deposit).
    let cases = [
        (AccountCommand::Open, "open-1"),
        (AccountCommand::Deposit(10), "deposit-1"),
        (AccountCommand::Close, "close-1"),
    ];
    let mut written = 0u64;
    for (command, key) in cases {
        let first = run(&handler, &s, command, &keyed(key, "first")).await?;
        ensure!(!first.deduplicated, "{command:?} reported as deduplicated");
        written += 1;
        let between = if command == AccountCommand::Open {
            AccountCommand::Deposit(5)
        } else {
            AccountCommand::Note
        };
        run(&handler, &s, between, &no_key).await?;
        written += 1;
        let retry = run(&handler, &s, command, &keyed(key, "retry")).await?;
        ensure!(
            retry.deduplicated,
            "retry of {command:?} not reported as deduplicated"
        );
        ensure_eq!(
            retry.events,
            first.events,
            "events of the retried {command:?} (the original ones, as stored)"
        );
        ensure_eq!(
            retry.version,
            first.version,
            "version of the retried {command:?} (the version after the original events)"
        );
        // The typed store's load futures are not provably `Send` over a
        // boxed store (a compiler limit), so the scenario decodes the raw
        // stream itself.
        let events = c
            .load_all(&s)
            .await?
            .into_iter()
            .map(|raw| handler.store().schema().decode(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure(format!("decoding the stream: {e}")))?;
        let state = Account.fold(events.iter().map(|e| &e.data));
        let version = events.last().map_or(Version::ZERO, |e| e.version);
        ensure_eq!(
            retry.state,
            state,
            "state of the retried {command:?} (the stream's current state)"
        );
        ensure_eq!(
            version,
            Version::new(written),
            "stream version after the retried {command:?}"
        );
    }
    ensure_eq!(
        c.load_all(&s).await?.len() as u64,
        written,
        "events in the stream after every retry"
    );
    Ok(())
}
