//! Command options and retry configuration: custom timestamps reach the
//! store, backoff waits on the sleep function it is given, and handler
//! errors say what failed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, CounterCommand, Overflow, RacingStore, TextCodec};
use eskit_core::{
    error::{StoreError, ValidationError, error_chain},
    event::{ExpectedVersion, StreamName, Timestamp, Version},
    handler::{CommandHandler, CommandOptions, ConflictRetry, HandleError, RetryPolicy},
    memory::MemoryStore,
    rt::block_on,
    store::{EventStore, LoadOptions},
    typed::{EventSchema, TypedStore},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn counter() -> Result<StreamName, eskit_core::event::InvalidName> {
    StreamName::new("counter", "c-1")
}

#[test]
fn a_commands_timestamp_is_stored_with_its_events() -> TestResult {
    let store = MemoryStore::new();
    let handler = CommandHandler::new(
        Counter,
        TypedStore::new(store.clone(), EventSchema::new(TextCodec)),
    );
    let then = Timestamp::from_unix_micros(1_234_567_890_123_456);
    let options = CommandOptions::new().with_timestamp(then);
    assert_eq!(options.timestamp(), Some(then));
    let done = block_on(handler.handle_with(&counter()?, &CounterCommand::Add(3), &options))?;
    assert_eq!(done.events[0].timestamp, then);
    let stored = block_on(store.load(&counter()?, LoadOptions::new()))?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].timestamp, then);

    // Without one, events get the current time.
    let before = Timestamp::now();
    block_on(handler.handle(&counter()?, &CounterCommand::Add(1)))?;
    let stored = block_on(store.load(&counter()?, LoadOptions::new()))?;
    assert!(stored[1].timestamp >= before);
    Ok(())
}

#[test]
fn conflict_backoff_waits_on_the_given_sleep_function() -> TestResult {
    const RETRIES: u32 = 4;
    // Delays of an hour and more: waiting on a real timer would hang the test.
    let policy = RetryPolicy::new(RETRIES)?
        .with_base_delay(Duration::from_secs(3600))
        .with_max_delay(Duration::from_secs(4 * 3600));
    let waited = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&waited);
    let retry = ConflictRetry::new(policy).with_sleep(move |d: Duration| {
        let log = Arc::clone(&log);
        async move {
            log.lock().map(|mut l| l.push(d)).ok();
        }
    });
    assert_eq!(retry.policy(), &policy);
    let attempts = Arc::new(AtomicUsize::new(0));
    let racing = RacingStore::new(Arc::clone(&attempts));
    let handler = CommandHandler::builder(
        Counter,
        TypedStore::new(racing, EventSchema::new(TextCodec)),
    )
    .with_middleware(retry)
    .build()?;

    let r = block_on(handler.handle(&counter()?, &CounterCommand::Add(1)));
    assert!(matches!(r, Err(e) if e.is_conflict()));
    assert_eq!(attempts.load(Ordering::SeqCst), RETRIES as usize + 1);
    let waited = waited.lock().map_err(|_| "poisoned")?.clone();
    assert_eq!(
        waited.len(),
        RETRIES as usize,
        "one wait per retry: {waited:?}"
    );
    for (attempt, d) in waited.iter().enumerate() {
        let full = Duration::from_secs(3600 << attempt).min(Duration::from_secs(4 * 3600));
        assert!(
            *d >= full / 2 && *d <= full,
            "retry {attempt} waited {d:?}, outside {:?}..={full:?}",
            full / 2
        );
    }
    Ok(())
}

#[test]
fn zero_delays_retry_without_calling_the_sleep_function() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let retry = ConflictRetry::new(RetryPolicy::new(2)?.with_base_delay(Duration::ZERO))
        .with_sleep(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        });
    let attempts = Arc::new(AtomicUsize::new(0));
    let racing = RacingStore::new(Arc::clone(&attempts));
    let handler = CommandHandler::builder(
        Counter,
        TypedStore::new(racing, EventSchema::new(TextCodec)),
    )
    .with_middleware(retry)
    .build()?;
    let r = block_on(handler.handle(&counter()?, &CounterCommand::Add(1)));
    assert!(matches!(r, Err(e) if e.is_conflict()));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[test]
fn handler_errors_say_what_failed_and_why_once() -> TestResult {
    let rejected: HandleError<Overflow> = HandleError::Rejected(Overflow);
    assert_eq!(
        rejected.to_string(),
        "command rejected: counter would overflow"
    );
    assert_eq!(
        error_chain(&rejected),
        "command rejected: counter would overflow"
    );

    let conflict: HandleError<Overflow> = HandleError::Store(StoreError::WrongExpectedVersion {
        stream: counter()?,
        expected: ExpectedVersion::Exact(Version::new(1)),
        actual: Version::new(2),
    });
    assert_eq!(
        error_chain(&conflict),
        "event store failure: concurrency conflict on stream `counter/c-1`: \
         expected version 1, actual version 2"
    );
    assert_eq!(error_chain(&conflict), conflict.to_string());

    let invalid: HandleError<Overflow> = StoreError::from(ValidationError::NoEvents).into();
    assert_eq!(invalid.to_string(), "event store failure: invalid input");
    assert_eq!(
        error_chain(&invalid),
        "event store failure: invalid input: an append needs at least one event"
    );

    // Through the handler: the decider's refusal reaches the message.
    let handler = CommandHandler::new(
        Counter,
        TypedStore::new(MemoryStore::new(), EventSchema::new(TextCodec)),
    );
    block_on(handler.handle(&counter()?, &CounterCommand::Add(u64::MAX)))?;
    let refused = block_on(handler.handle(&counter()?, &CounterCommand::Add(1)))
        .err()
        .ok_or("expected a rejection")?;
    assert_eq!(
        refused.to_string(),
        "command rejected: counter would overflow"
    );
    Ok(())
}
