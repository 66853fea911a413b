//! The smallest eskit program: a counter decider and a command handler on
//! the embedded SQLite store (in memory here; pass a path to `SqliteStore::open`
//! for a file). Run with `cargo run --example counter`.

#![allow(clippy::print_stdout)] // an example talks to its user

use eskit_core::{
    error::CodecError,
    event::StreamName,
    handler::{CommandHandler, Decider},
    rt::block_on,
    typed::{DomainEvent, EventCodec, EventSchema, TypedStore},
};
use eskit_sqlite::SqliteStore;

/// Events carry no data: the event type name says everything.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Incremented,
    Decremented,
}

impl DomainEvent for Event {
    fn event_type(&self) -> &'static str {
        match self {
            Event::Incremented => "Incremented",
            Event::Decremented => "Decremented",
        }
    }

    fn event_types() -> &'static [&'static str] {
        &["Incremented", "Decremented"]
    }
}

enum Command {
    Increment,
    Decrement,
}

#[derive(Debug)]
struct BelowZero;

impl std::fmt::Display for BelowZero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the counter cannot go below zero")
    }
}

impl std::error::Error for BelowZero {}

struct Counter;

impl Decider for Counter {
    type State = u64;
    type Command = Command;
    type Event = Event;
    type Error = BelowZero;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, n: &u64, cmd: &Command) -> Result<Vec<Event>, BelowZero> {
        match cmd {
            Command::Increment => Ok(vec![Event::Incremented]),
            Command::Decrement if *n == 0 => Err(BelowZero),
            Command::Decrement => Ok(vec![Event::Decremented]),
        }
    }

    fn evolve(&self, n: u64, event: &Event) -> u64 {
        match event {
            Event::Incremented => n + 1,
            Event::Decremented => n.saturating_sub(1),
        }
    }
}

/// The events have no payload, so the codec only maps names back to variants.
struct NameOnly;

impl EventCodec<Event> for NameOnly {
    fn name(&self) -> &'static str {
        "name-only"
    }

    fn encode(&self, _event: &Event, _out: &mut Vec<u8>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(&self, event_type: &str, _payload: &[u8]) -> Result<Event, CodecError> {
        match event_type {
            "Incremented" => Ok(Event::Incremented),
            "Decremented" => Ok(Event::Decremented),
            other => Err(CodecError::UnknownEventType {
                event_type: other.to_owned(),
            }),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = TypedStore::new(SqliteStore::open_in_memory()?, EventSchema::new(NameOnly));
    let handler = CommandHandler::new(Counter, store);
    let counter = StreamName::new("counter", "1")?;

    let commands = [
        Command::Increment,
        Command::Increment,
        Command::Decrement,
        Command::Decrement,
        Command::Decrement, // refused: the counter is at zero
    ];
    for cmd in &commands {
        match block_on(handler.handle(&counter, cmd)) {
            Ok(done) => println!("counter at version {}: {}", done.version, done.state),
            Err(e) => println!("refused: {}", eskit_core::error::error_chain(&e)),
        }
    }
    Ok(())
}
