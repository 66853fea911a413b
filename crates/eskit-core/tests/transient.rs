//! Retries of transient store failures by the command handler's retry
//! middleware: bounded, with backoff through the sleep hook, never for a
//! non-transient failure, and for a failure whose outcome is unknown only
//! when the command has an idempotency key.
//!
//! The store is the real `MemoryStore` behind a wrapper that fails a given
//! number of calls with a given error first.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, CounterCommand, CounterEvent, TextCodec};
use eskit_core::{
    error::{BoxError, StoreError},
    event::{AppendResult, EventType, ExpectedVersion, NewEvent, RawEvent, StreamName, Version},
    handler::{CommandHandler, CommandOptions, ConflictRetry, HandleError, RetryPolicy},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore, LoadOptions},
    typed::{EventSchema, TypedStore},
};

type TestResult = Result<(), BoxError>;

/// How the wrapper fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unavailable,
    TimedOut,
    Overloaded,
    StorageFull,
    Closed,
    Backend,
}

impl Kind {
    fn error(self) -> StoreError {
        let cause: BoxError = "injected".into();
        match self {
            Self::Unavailable => StoreError::unavailable(cause),
            Self::TimedOut => StoreError::timed_out(cause),
            Self::Overloaded => StoreError::overloaded(cause),
            Self::StorageFull => StoreError::storage_full(cause),
            Self::Closed => StoreError::Closed,
            Self::Backend => StoreError::backend(cause),
        }
    }
}

/// Which calls fail, and whether a failed append was applied anyway (a
/// reply lost after the commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// The append fails before it reaches the store.
    Append,
    /// The append is applied, then its reply is lost.
    AppendAfterCommit,
    /// The load fails.
    Load,
}

/// The memory store, failing the next `remaining` calls of one sort.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStore,
    kind: Kind,
    fail: Fail,
    remaining: Arc<AtomicUsize>,
    appends: Arc<AtomicUsize>,
    /// Appends (after the injected failures) that another writer beats to
    /// the stream, so that they conflict.
    races: Arc<AtomicUsize>,
}

impl Flaky {
    fn new(kind: Kind, fail: Fail, failures: usize) -> Self {
        Self {
            inner: MemoryStore::new(),
            kind,
            fail,
            remaining: Arc::new(AtomicUsize::new(failures)),
            appends: Arc::new(AtomicUsize::new(0)),
            races: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes one failure if any is left.
    fn fails(&self, at: Fail) -> bool {
        at == self.fail && take(&self.remaining)
    }

    /// How many appends reached the wrapper.
    fn append_calls(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }
}

impl EventStore for Flaky {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fails(Fail::Append) {
            return Err(self.kind.error());
        }
        if take(&self.races) {
            let competing =
                NewEvent::new(EventType::new("Added")?, b"100".to_vec()).with_codec("text");
            self.inner
                .append(
                    stream,
                    ExpectedVersion::Any,
                    vec![competing],
                    AppendOptions::new(),
                )
                .await?;
        }
        let result = self.inner.append(stream, expected, events, options).await?;
        if self.fails(Fail::AppendAfterCommit) {
            return Err(self.kind.error());
        }
        Ok(result)
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        if self.fails(Fail::Load) {
            return Err(self.kind.error());
        }
        self.inner.load(stream, options).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
}

/// Takes one from a counter if it is above zero.
fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

type Handler = CommandHandler<Counter, Flaky>;

/// The backoff delays the retry middleware asked to wait.
type Waited = Arc<Mutex<Vec<Duration>>>;

/// A handler over `store` retrying up to `retries` times, recording the
/// backoff delays instead of waiting.
fn handler(store: &Flaky, retries: u32) -> Result<(Handler, Waited), BoxError> {
    let waited = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&waited);
    let retry = ConflictRetry::new(
        RetryPolicy::new(retries)?
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(1)),
    )
    .with_sleep(move |d| {
        if let Ok(mut log) = log.lock() {
            log.push(d);
        }
        std::future::ready(())
    });
    let typed = TypedStore::<_, CounterEvent>::new(store.clone(), EventSchema::new(TextCodec));
    Ok((
        CommandHandler::builder(Counter, typed)
            .with_middleware(retry)
            .build()?,
        waited,
    ))
}

fn counter() -> Result<StreamName, BoxError> {
    Ok(StreamName::new("counter", "c-1")?)
}

fn stored(store: &Flaky) -> Result<usize, BoxError> {
    Ok(block_on(store.inner.load(&counter()?, LoadOptions::new()))?.len())
}

fn delays(waited: &Mutex<Vec<Duration>>) -> Result<Vec<Duration>, BoxError> {
    Ok(waited.lock().map_err(|_| "poisoned")?.clone())
}

fn store_error<T, E: std::fmt::Debug>(
    r: Result<T, HandleError<E>>,
) -> Result<StoreError, BoxError> {
    match r {
        Err(HandleError::Store(e)) => Ok(e),
        Err(other) => Err(format!("expected a store error, got {other:?}").into()),
        Ok(_) => Err("expected a store error, got success".into()),
    }
}

#[test]
fn transient_append_failures_are_retried_with_backoff_until_the_append_succeeds() -> TestResult {
    for kind in [Kind::Unavailable, Kind::Overloaded, Kind::TimedOut] {
        let store = Flaky::new(kind, Fail::Append, 3);
        let (handler, waited) = handler(&store, 5)?;
        // With a key, so that failures of unknown outcome are retried too.
        let options = CommandOptions::new().with_idempotency_key("cmd-1");
        let done = block_on(handler.handle_with(&counter()?, &CounterCommand::Add(4), &options))
            .map_err(|e| format!("{kind:?}: {e}"))?;
        assert_eq!((done.state, done.version.get()), (4, 1), "{kind:?}");
        assert_eq!(
            store.append_calls(),
            4,
            "{kind:?}: 3 failures, then success"
        );
        assert_eq!(stored(&store)?, 1, "{kind:?}: exactly one event");
        let delays = delays(&waited)?;
        assert_eq!(delays.len(), 3, "{kind:?}: one backoff per retry");
        // Exponential backoff with jitter: attempt n waits within
        // [base * 2^n / 2, base * 2^n].
        for (n, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(10 * (1 << n));
            assert!(*d >= full / 2 && *d <= full, "{kind:?}: delay {n} is {d:?}");
        }
    }
    Ok(())
}

#[test]
fn transient_load_failures_are_retried() -> TestResult {
    let store = Flaky::new(Kind::Overloaded, Fail::Load, 2);
    let (handler, waited) = handler(&store, 5)?;
    let done = block_on(handler.handle(&counter()?, &CounterCommand::Add(1)))?;
    assert_eq!(done.state, 1);
    assert_eq!(delays(&waited)?.len(), 2);
    Ok(())
}

#[test]
fn transient_retries_are_bounded_by_the_policy() -> TestResult {
    let store = Flaky::new(Kind::Overloaded, Fail::Append, 100);
    let (handler, waited) = handler(&store, 4)?;
    let e = store_error(block_on(
        handler.handle(&counter()?, &CounterCommand::Add(1)),
    ))?;
    assert!(e.is_overloaded(), "{e:?}");
    assert_eq!(store.append_calls(), 5, "1 attempt and 4 retries");
    assert_eq!(delays(&waited)?.len(), 4);
    assert_eq!(stored(&store)?, 0);
    Ok(())
}

#[test]
fn non_transient_failures_are_not_retried() -> TestResult {
    for kind in [Kind::StorageFull, Kind::Closed, Kind::Backend] {
        let store = Flaky::new(kind, Fail::Append, 1);
        let (handler, waited) = handler(&store, 5)?;
        let options = CommandOptions::new().with_idempotency_key("cmd-1");
        let e = store_error(block_on(handler.handle_with(
            &counter()?,
            &CounterCommand::Add(1),
            &options,
        )))?;
        assert!(!e.is_transient(), "{kind:?}: {e:?}");
        assert_eq!(store.append_calls(), 1, "{kind:?} was retried");
        assert!(delays(&waited)?.is_empty(), "{kind:?}");
    }
    Ok(())
}

/// A timed-out append that was in fact applied: retried without a key, the
/// command would be decided again on the new state and applied twice.
#[test]
fn a_timed_out_append_without_an_idempotency_key_is_not_retried() -> TestResult {
    for kind in [Kind::TimedOut, Kind::Unavailable] {
        let store = Flaky::new(kind, Fail::AppendAfterCommit, 1);
        let (handler, waited) = handler(&store, 5)?;
        let e = store_error(block_on(
            handler.handle(&counter()?, &CounterCommand::Add(7)),
        ))?;
        assert!(e.is_outcome_unknown(), "{kind:?}: {e:?}");
        assert_eq!(store.append_calls(), 1, "{kind:?}: retried without a key");
        assert!(delays(&waited)?.is_empty(), "{kind:?}");
        assert_eq!(
            stored(&store)?,
            1,
            "{kind:?}: applied once, reported unknown"
        );
    }
    Ok(())
}

#[test]
fn a_timed_out_append_with_an_idempotency_key_is_retried_and_found_applied() -> TestResult {
    for kind in [Kind::TimedOut, Kind::Unavailable] {
        let store = Flaky::new(kind, Fail::AppendAfterCommit, 1);
        let (handler, waited) = handler(&store, 5)?;
        let options = CommandOptions::new().with_idempotency_key("cmd-1");
        let done = block_on(handler.handle_with(&counter()?, &CounterCommand::Add(7), &options))
            .map_err(|e| format!("{kind:?}: {e}"))?;
        assert!(
            done.deduplicated,
            "{kind:?}: the retry found the first append"
        );
        assert_eq!((done.state, done.version.get()), (7, 1), "{kind:?}");
        // The retry looks the key up before deciding, finds the append that
        // did commit, and appends nothing.
        assert_eq!(store.append_calls(), 1, "{kind:?}");
        assert_eq!(delays(&waited)?.len(), 1, "{kind:?}");
        assert_eq!(stored(&store)?, 1, "{kind:?}: applied exactly once");
    }
    Ok(())
}

/// Overloaded means refused without doing anything: retrying is safe
/// without a key.
#[test]
fn an_overloaded_append_is_retried_without_an_idempotency_key() -> TestResult {
    let store = Flaky::new(Kind::Overloaded, Fail::Append, 1);
    let (handler, _) = handler(&store, 5)?;
    let done = block_on(handler.handle(&counter()?, &CounterCommand::Add(2)))?;
    assert_eq!((done.state, done.version.get()), (2, 1));
    assert_eq!(store.append_calls(), 2);
    Ok(())
}

#[test]
fn a_handler_without_retry_configured_does_not_retry() -> TestResult {
    let store = Flaky::new(Kind::Overloaded, Fail::Append, 1);
    let typed = TypedStore::<_, CounterEvent>::new(store.clone(), EventSchema::new(TextCodec));
    let handler = CommandHandler::new(Counter, typed);
    let e = store_error(block_on(
        handler.handle(&counter()?, &CounterCommand::Add(2)),
    ))?;
    assert!(e.is_overloaded(), "{e:?}");
    assert_eq!(store.append_calls(), 1);
    Ok(())
}

/// Two transient failures, then a conflict, then success, with a policy of
/// 2 retries: conflicts and transient failures each have their own budget
/// (one shared budget of 2 would give up at the conflict).
#[test]
fn conflicts_and_transient_failures_are_counted_apart() -> TestResult {
    let store = Flaky::new(Kind::Overloaded, Fail::Append, 2);
    store.races.store(1, Ordering::SeqCst);
    let (handler, waited) = handler(&store, 2)?;
    let done = block_on(handler.handle(&counter()?, &CounterCommand::Add(1)))?;
    // The competing write added 100 before the command's own event.
    assert_eq!((done.state, done.version.get()), (101, 2));
    assert_eq!(
        store.append_calls(),
        4,
        "2 transient failures, 1 conflict, 1 success"
    );
    assert_eq!(delays(&waited)?.len(), 3);
    Ok(())
}
