//! The typed DCB layer: [`DcbDecider`] (query, initial state, evolve,
//! decide), [`DcbHandler`] that runs it against a store, and
//! [`DcbDeciderTest`] for Given/When/Then tests.
//!
//! A DCB decision is not bound to one stream's version: it reads every
//! event its command's [`EventQuery`] selects, across streams, folds them
//! into a state, decides, and appends with an [`AppendCondition`] so that
//! the append fails if a matching event arrived after the read. The handler
//! then reads, folds and decides again (with the retry policy's backoff).

use std::fmt;

use crate::codec::DomainEvent;
use crate::dcb::{AppendCondition, EventQuery, EventQueryReader, QueryOptions, QueryPager};
use crate::error::StoreError;
use crate::event::{EventHeader, RecordedEvent};
use crate::handler::{CommandOptions, HandleError, RetryPolicy};
use crate::id::EventId;
use crate::limits::MAX_READ_LIMIT;
use crate::metadata::Metadata;
use crate::name::{EventType, StreamName};
use crate::rt::sleep;
use crate::store::{AppendOptions, EventStore, GlobalBatch};
use crate::tag::{Tag, normalize};
use crate::testing::SpecFailure;
use crate::time::Timestamp;
use crate::typed::TypedStore;
use crate::version::{ExpectedVersion, GlobalCursor, Position, Version};

/// An event with its tags, as a [`DcbDecider`] produces it and
/// [`TypedStore::append_tagged`] takes it.
pub type Tagged<E> = (E, Vec<Tag>);

/// A decision over the events a query selects, across streams.
///
/// ```
/// use eskit_core::prelude::*;
/// use eskit_core::testing::{DcbDeciderTest, SpecFailure};
/// /// One seat per course: a course can be booked once.
/// struct Booking;
/// #[derive(Debug, Clone, PartialEq)] struct Booked(String);
/// # impl DomainEvent for Booked {
/// #     fn event_type(&self) -> &'static str { "Booked" }
/// #     fn event_types() -> &'static [&'static str] { &["Booked"] }
/// # }
/// #[derive(Debug)] struct Taken;
/// # impl std::fmt::Display for Taken { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("seat taken") } }
/// # impl std::error::Error for Taken {}
/// fn course(c: &str) -> Tag { Tag::new(format!("course:{c}")).unwrap_or_else(|_| unreachable!()) }
/// impl DcbDecider for Booking {
///     type State = bool;
///     type Command = String;
///     type Event = Booked;
///     type Error = Taken;
///     fn query(&self, c: &String) -> EventQuery { QueryItem::new().with_tags([course(c)]).into() }
///     fn stream(&self, c: &String) -> StreamName { StreamName::new("booking", c.as_str()).unwrap_or_else(|_| unreachable!()) }
///     fn initial_state(&self, _: &String) -> bool { false }
///     fn evolve(&self, _: bool, _: &RecordedEvent<Booked>) -> bool { true }
///     fn decide(&self, taken: &bool, c: &String) -> Result<Vec<(Booked, Vec<Tag>)>, Taken> {
///         if *taken { Err(Taken) } else { Ok(vec![(Booked(c.clone()), vec![course(c)])]) }
///     }
/// }
/// DcbDeciderTest::new(&Booking).when("c-1".into()).then_expect([(Booked("c-1".into()), vec![course("c-1")])])?;
/// DcbDeciderTest::new(&Booking)
///     .given([(Booked("c-1".into()), vec![course("c-1")])])
///     .when("c-1".into())
///     .then_error("taken")?;
/// // An event the query does not select is not part of the decision.
/// DcbDeciderTest::new(&Booking)
///     .given([(Booked("c-2".into()), vec![course("c-2")])])
///     .when("c-1".into())
///     .then_expect([(Booked("c-1".into()), vec![course("c-1")])])?;
/// # Ok::<(), SpecFailure>(())
/// ```
pub trait DcbDecider: Send + Sync + 'static {
    /// The state decisions are made on.
    type State: Send + Sync;
    /// The commands it accepts.
    type Command: Send + Sync;
    /// The events it reads and produces.
    type Event: DomainEvent;
    /// Why a command is rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events this command's decision depends on.
    fn query(&self, command: &Self::Command) -> EventQuery;

    /// The stream the decision's events are appended to (one append, so
    /// one stream; the condition, not the stream's version, keeps the
    /// decision consistent).
    fn stream(&self, command: &Self::Command) -> StreamName;

    /// The state before any selected event.
    fn initial_state(&self, command: &Self::Command) -> Self::State;

    /// Applies one selected event (with its tags and envelope) to the state.
    fn evolve(&self, state: Self::State, event: &RecordedEvent<Self::Event>) -> Self::State;

    /// Decides which events, each with its tags, the command produces; an
    /// empty list means "nothing to do".
    ///
    /// # Errors
    /// The domain's reason to reject the command.
    fn decide(
        &self,
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Tagged<Self::Event>>, Self::Error>;
}

/// The outcome of a handled DCB command.
pub struct DcbHandled<D: DcbDecider> {
    /// The state after the new events.
    pub state: D::State,
    /// The events the command produced, as recorded (empty when it decided
    /// nothing).
    pub events: Vec<RecordedEvent<D::Event>>,
    /// The cursor the decision read up to (its condition's cursor).
    pub read_up_to: GlobalCursor,
    /// How many times the condition failed and the decision was made again.
    pub retries: u32,
    /// `true` when the command's idempotency key matched an earlier append:
    /// nothing was written and `events` are the original ones.
    pub deduplicated: bool,
}

impl<D: DcbDecider> fmt::Debug for DcbHandled<D>
where
    D::State: fmt::Debug,
    D::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcbHandled")
            .field("state", &self.state)
            .field("events", &self.events)
            .field("read_up_to", &self.read_up_to)
            .field("retries", &self.retries)
            .field("deduplicated", &self.deduplicated)
            .finish()
    }
}

impl<B: EventStore + EventQueryReader, E: DomainEvent> TypedStore<B, E> {
    /// Reads the events matching `options`' query and decodes those that
    /// are `E`'s; others (a query item without types can select them) are
    /// skipped, as in [`TypedStore::read`]. The page's `next` moves past
    /// skipped events too.
    ///
    /// # Errors
    /// As [`EventQueryReader::query`], plus [`StoreError::Codec`] for an
    /// event of one of `E`'s types that does not decode.
    pub async fn query(
        &self,
        options: QueryOptions,
    ) -> Result<GlobalBatch<RecordedEvent<E>>, StoreError> {
        let page = self.backend().query(options).await?;
        let mut events = Vec::with_capacity(page.events.len());
        let (next, head) = (page.next, page.head);
        for raw in page.events {
            if let Some(e) = self.schema().decode_if_mine(raw)? {
                events.push(e);
            }
        }
        Ok(GlobalBatch { events, next, head })
    }
}

/// Runs a [`DcbDecider`]: reads the command's query to its end (with the
/// [`QueryPager`]'s semantics), folds, decides, and appends with the
/// condition "nothing matching after what was read"; when the condition
/// fails, it reads and decides again, as often as the retry policy allows
/// (none by default), waiting the policy's backoff in between.
///
/// ```
/// # use eskit_core::prelude::*;
/// # use eskit_core::{memory::MemoryStore, rt::block_on};
/// # struct Booking;
/// # #[derive(Debug, Clone, PartialEq)] struct Booked(u8);
/// # impl DomainEvent for Booked {
/// #     fn event_type(&self) -> &'static str { "Booked" }
/// #     fn event_types() -> &'static [&'static str] { &["Booked"] }
/// # }
/// # struct ByteCodec;
/// # impl EventCodec<Booked> for ByteCodec {
/// #     fn name(&self) -> &'static str { "byte" }
/// #     fn encode(&self, e: &Booked, out: &mut Vec<u8>) -> Result<(), CodecError> { out.push(e.0); Ok(()) }
/// #     fn decode(&self, _: &str, b: &[u8]) -> Result<Booked, CodecError> {
/// #         b.first().map(|b| Booked(*b)).ok_or_else(|| CodecError::decode(Some("Booked"), "empty"))
/// #     }
/// # }
/// # #[derive(Debug)] struct Taken;
/// # impl std::fmt::Display for Taken { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("seat taken") } }
/// # impl std::error::Error for Taken {}
/// # fn seat(n: u8) -> Tag { Tag::new(format!("seat:{n}")).unwrap_or_else(|_| unreachable!()) }
/// # impl DcbDecider for Booking {
/// #     type State = bool; type Command = u8; type Event = Booked; type Error = Taken;
/// #     fn query(&self, n: &u8) -> EventQuery { QueryItem::new().with_tags([seat(*n)]).into() }
/// #     fn stream(&self, n: &u8) -> StreamName { StreamName::new("booking", n.to_string()).unwrap_or_else(|_| unreachable!()) }
/// #     fn initial_state(&self, _: &u8) -> bool { false }
/// #     fn evolve(&self, _: bool, _: &RecordedEvent<Booked>) -> bool { true }
/// #     fn decide(&self, taken: &bool, n: &u8) -> Result<Vec<(Booked, Vec<Tag>)>, Taken> {
/// #         if *taken { Err(Taken) } else { Ok(vec![(Booked(*n), vec![seat(*n)])]) }
/// #     }
/// # }
/// let store = TypedStore::new(MemoryStore::new(), EventSchema::new(ByteCodec));
/// let handler = DcbHandler::new(Booking, store).with_conflict_retry(RetryPolicy::new(5)?);
/// let booked = block_on(handler.handle(&7))?;
/// assert_eq!(booked.events[0].tags, vec![seat(7)]);
/// assert!(matches!(block_on(handler.handle(&7)), Err(HandleError::Rejected(Taken))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DcbHandler<D: DcbDecider, B> {
    decider: D,
    store: TypedStore<B, D::Event>,
    retry: Option<RetryPolicy>,
}

impl<D: DcbDecider, B: fmt::Debug> fmt::Debug for DcbHandler<D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcbHandler")
            .field("store", &self.store)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<D, B> DcbHandler<D, B>
where
    D: DcbDecider,
    B: EventStore + EventQueryReader,
{
    /// Runs `decider` against `store`, without retries.
    pub fn new(decider: D, store: TypedStore<B, D::Event>) -> Self {
        Self {
            decider,
            store,
            retry: None,
        }
    }

    /// Decides again when the append's condition fails, up to the policy's
    /// retries, waiting its backoff before each.
    #[must_use]
    pub fn with_conflict_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The typed store.
    pub fn store(&self) -> &TypedStore<B, D::Event> {
        &self.store
    }

    /// The decider.
    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// Handles a command with default options.
    ///
    /// # Errors
    /// As [`handle_with`](Self::handle_with).
    ///
    /// # Cancel safety
    /// As [`handle_with`](Self::handle_with).
    pub async fn handle(
        &self,
        command: &D::Command,
    ) -> Result<DcbHandled<D>, HandleError<D::Error>> {
        self.handle_with(command, &CommandOptions::new()).await
    }

    /// Handles a command: read, fold, decide, append with the condition.
    ///
    /// # Errors
    /// [`HandleError::Rejected`] with the decider's error;
    /// [`HandleError::Store`] with [`StoreError::ConditionFailed`] once the
    /// retries are used up, or with any other store or codec failure.
    ///
    /// # Cancel safety
    /// As the backend's `append`: a dropped future has appended the
    /// decision's events completely or not at all; an idempotency key in
    /// `options` makes a repeated command safe either way.
    pub async fn handle_with(
        &self,
        command: &D::Command,
        options: &CommandOptions,
    ) -> Result<DcbHandled<D>, HandleError<D::Error>> {
        let query = self.decider.query(command);
        let stream = self.decider.stream(command);
        let mut retries = 0;
        loop {
            let (raw, read_up_to) = QueryPager::new(
                self.store.backend(),
                QueryOptions::from_start(query.clone(), MAX_READ_LIMIT),
            )
            .collect_with_cursor()
            .await?;
            let mut state = self.decider.initial_state(command);
            for r in raw {
                if let Some(e) = self
                    .store
                    .schema()
                    .decode_if_mine(r)
                    .map_err(StoreError::from)?
                {
                    state = self.decider.evolve(state, &e);
                }
            }
            let decided = self
                .decider
                .decide(&state, command)
                .map_err(HandleError::Rejected)?;
            if decided.is_empty() {
                return Ok(DcbHandled {
                    state,
                    events: Vec::new(),
                    read_up_to,
                    retries,
                    deduplicated: false,
                });
            }
            let mut append = AppendOptions::new()
                .with_metadata(options.metadata().clone())
                .with_condition(AppendCondition::new(query.clone(), read_up_to));
            if let Some(key) = options.idempotency_key() {
                append = append.with_idempotency_key(key);
            }
            if let Some(t) = options.timestamp() {
                append = append.with_timestamp(t);
            }
            match self
                .store
                .append_tagged(&stream, ExpectedVersion::Any, decided, append)
                .await
            {
                Ok(done) => {
                    for e in &done.events {
                        state = self.decider.evolve(state, e);
                    }
                    return Ok(DcbHandled {
                        state,
                        events: done.events,
                        read_up_to,
                        retries,
                        deduplicated: done.deduplicated,
                    });
                }
                Err(e) if e.is_condition_failed() => match &self.retry {
                    Some(policy) if retries < policy.max_retries() => {
                        sleep(policy.delay(retries)).await;
                        retries += 1;
                    }
                    _ => return Err(HandleError::Store(e)),
                },
                Err(e) => return Err(HandleError::Store(e)),
            }
        }
    }
}

/// Given/When/Then for a [`DcbDecider`]: tagged history, command, expected
/// outcome. The history is filtered by the command's query as a store
/// would filter it, so a test checks the query too. Events get synthetic
/// envelopes (stream `test/1`, versions and positions from 1).
///
/// See [`DcbDecider`] for an example.
pub struct DcbDeciderTest<'d, D: DcbDecider> {
    decider: &'d D,
    given: Vec<(D::Event, Vec<Tag>)>,
    when: Option<D::Command>,
}

impl<D: DcbDecider> fmt::Debug for DcbDeciderTest<'_, D>
where
    D::Event: fmt::Debug,
    D::Command: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcbDeciderTest")
            .field("given", &self.given)
            .field("when", &self.when)
            .finish()
    }
}

type Decision<D> = Result<Vec<(<D as DcbDecider>::Event, Vec<Tag>)>, <D as DcbDecider>::Error>;

impl<'d, D: DcbDecider> DcbDeciderTest<'d, D>
where
    D::Event: fmt::Debug + PartialEq,
{
    /// A test of `decider` with no history.
    pub fn new(decider: &'d D) -> Self {
        Self {
            decider,
            given: Vec::new(),
            when: None,
        }
    }

    /// The events, with their tags, that happened before.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = (D::Event, Vec<Tag>)>) -> Self {
        self.given.extend(events);
        self
    }

    /// The command under test.
    #[must_use]
    pub fn when(mut self, command: D::Command) -> Self {
        self.when = Some(command);
        self
    }

    fn decide(self) -> Result<(D::State, Decision<D>), SpecFailure> {
        let command = self
            .when
            .as_ref()
            .ok_or_else(|| SpecFailure::new("no command: call when(..) before then_*"))?;
        let query = self.decider.query(command);
        let stream = StreamName::new("test", "1").map_err(|e| SpecFailure::new(e.to_string()))?;
        let mut state = self.decider.initial_state(command);
        let mut n = 0u64;
        for (data, tags) in self.given {
            let event_type = EventType::from_static(data.event_type())
                .map_err(|e| SpecFailure::new(e.to_string()))?;
            let tags = normalize(tags);
            if !query.matches(&event_type, &tags) {
                continue;
            }
            n += 1;
            let recorded = RecordedEvent {
                header: EventHeader {
                    id: EventId::new(),
                    stream: stream.clone(),
                    version: Version::new(n),
                    position: Position::new(n),
                    tx: 0,
                    event_type,
                    schema_version: 1,
                    timestamp: Timestamp::from_unix_micros(n as i64 * 1_000_000),
                    metadata: Metadata::new(),
                    tags: tags.into(),
                    tenant: None,
                },
                data,
            };
            state = self.decider.evolve(state, &recorded);
        }
        let decided = self.decider.decide(&state, command);
        Ok((state, decided))
    }

    /// Expects exactly these events with these tags (compared as sets).
    ///
    /// # Errors
    /// [`SpecFailure`] with a diff, or naming the unexpected error.
    pub fn then_expect(
        self,
        expected: impl IntoIterator<Item = (D::Event, Vec<Tag>)>,
    ) -> Result<(), SpecFailure> {
        let expected: Vec<(D::Event, Vec<Tag>)> = expected
            .into_iter()
            .map(|(e, t)| (e, normalize(t)))
            .collect();
        match self.decide()?.1 {
            Ok(actual) => {
                let actual: Vec<(D::Event, Vec<Tag>)> =
                    actual.into_iter().map(|(e, t)| (e, normalize(t))).collect();
                if actual == expected {
                    Ok(())
                } else {
                    Err(SpecFailure::diff("events", &expected, &actual))
                }
            }
            Err(e) => Err(SpecFailure::new(format!(
                "expected events {expected:?}, the command was rejected: {e}"
            ))),
        }
    }

    /// Expects no events and no error.
    ///
    /// # Errors
    /// [`SpecFailure`] otherwise.
    pub fn then_no_events(self) -> Result<(), SpecFailure> {
        self.then_expect([])
    }

    /// Expects a rejection whose message contains `needle`.
    ///
    /// # Errors
    /// [`SpecFailure`] when events were produced or the message differs.
    pub fn then_error(self, needle: &str) -> Result<(), SpecFailure> {
        match self.decide()?.1 {
            Err(e) if e.to_string().contains(needle) => Ok(()),
            Err(e) => Err(SpecFailure::new(format!(
                "expected an error containing {needle:?}, got: {e}"
            ))),
            Ok(events) => Err(SpecFailure::new(format!(
                "expected an error containing {needle:?}, got events {events:#?}"
            ))),
        }
    }

    /// Expects this state from the history the query selects: the state
    /// the decision is made on.
    ///
    /// # Errors
    /// [`SpecFailure`] with a diff.
    pub fn then_read_state(self, expected: D::State) -> Result<(), SpecFailure>
    where
        D::State: fmt::Debug + PartialEq,
    {
        let (state, _) = self.decide()?;
        if state == expected {
            Ok(())
        } else {
            Err(SpecFailure::diff("states", &expected, &state))
        }
    }
}
