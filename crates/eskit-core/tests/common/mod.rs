//! Shared fixtures for the core's integration tests: a counter decider and a
//! tiny test codec (the real codecs live in eskit-codec).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eskit_core::{
    error::{CodecError, StoreError},
    event::{AppendResult, EventType, ExpectedVersion, NewEvent, RawEvent, StreamName, Version},
    handler::Decider,
    memory::MemoryStore,
    store::{AppendOptions, EventStore, LoadOptions},
    typed::{Codec, DomainEvent, EventCodec},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterEvent {
    Added(u64),
    Reset,
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Added(_) => "Added",
            Self::Reset => "Reset",
        }
    }
    fn event_types() -> &'static [&'static str] {
        &["Added", "Reset"]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterCommand {
    Add(u64),
    Reset,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("counter would overflow")
    }
}

impl std::error::Error for Overflow {}

pub struct Counter;

impl Decider for Counter {
    type State = u64;
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = Overflow;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, state: &u64, cmd: &CounterCommand) -> Result<Vec<CounterEvent>, Overflow> {
        match cmd {
            CounterCommand::Add(0) => Ok(vec![]),
            CounterCommand::Add(n) => {
                state.checked_add(*n).ok_or(Overflow)?;
                Ok(vec![CounterEvent::Added(*n)])
            }
            CounterCommand::Reset => Ok(vec![CounterEvent::Reset]),
        }
    }

    fn evolve(&self, state: u64, event: &CounterEvent) -> u64 {
        match event {
            CounterEvent::Added(n) => state + n,
            CounterEvent::Reset => 0,
        }
    }
}

/// Payload: the amount as decimal text (empty for `Reset`).
pub struct TextCodec;

impl EventCodec<CounterEvent> for TextCodec {
    fn name(&self) -> &'static str {
        "text"
    }

    fn encode(&self, event: &CounterEvent, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if let CounterEvent::Added(n) = event {
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Ok(())
    }

    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<CounterEvent, CodecError> {
        match event_type {
            "Added" => std::str::from_utf8(payload)
                .map_err(|e| CodecError::decode(Some(event_type), e))?
                .parse()
                .map(CounterEvent::Added)
                .map_err(|e| CodecError::decode(Some(event_type), e)),
            "Reset" => Ok(CounterEvent::Reset),
            other => Err(CodecError::UnknownEventType {
                event_type: other.to_owned(),
            }),
        }
    }
}

/// Same events, payload as 8 little-endian bytes: a second codec for
/// multi-codec reads.
pub struct BinCodec;

impl EventCodec<CounterEvent> for BinCodec {
    fn name(&self) -> &'static str {
        "bin"
    }

    fn encode(&self, event: &CounterEvent, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if let CounterEvent::Added(n) = event {
            out.extend_from_slice(&n.to_le_bytes());
        }
        Ok(())
    }

    fn decode(&self, event_type: &str, payload: &[u8]) -> Result<CounterEvent, CodecError> {
        match event_type {
            "Added" => payload
                .try_into()
                .map(|b| CounterEvent::Added(u64::from_le_bytes(b)))
                .map_err(|e| CodecError::decode(Some(event_type), e)),
            "Reset" => Ok(CounterEvent::Reset),
            other => Err(CodecError::UnknownEventType {
                event_type: other.to_owned(),
            }),
        }
    }
}

/// Snapshot state codec: u64 little-endian.
pub struct U64Codec;

impl Codec<u64> for U64Codec {
    fn name(&self) -> &'static str {
        "u64-le"
    }

    fn encode(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<u64, CodecError> {
        bytes
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|e| CodecError::decode(None, e))
    }
}

/// A backend where another writer always wins: every append first sneaks in
/// a foreign `Added` event, so the caller's expected version is always
/// stale. `attempts` counts the appends tried.
pub struct RacingStore {
    pub inner: MemoryStore,
    pub attempts: Arc<AtomicUsize>,
}

impl RacingStore {
    /// A racing store over an empty memory store, counting into `attempts`.
    pub fn new(attempts: Arc<AtomicUsize>) -> Self {
        Self {
            inner: MemoryStore::new(),
            attempts,
        }
    }
}

impl EventStore for RacingStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let foreign = NewEvent::new(EventType::new("Added")?, b"1".to_vec()).with_codec("text");
        self.inner
            .append(
                stream,
                ExpectedVersion::Any,
                vec![foreign],
                AppendOptions::new(),
            )
            .await?;
        self.inner.append(stream, expected, events, options).await
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.load(stream, options).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
}
