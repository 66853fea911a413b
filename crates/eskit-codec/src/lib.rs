//! JSON, CBOR and Protobuf codecs for eskit-rs, typed upcasters, and
//! decoders hardened against untrusted bytes.
//!
//! The codecs implement the core's [`EventCodec`](eskit_core::typed::EventCodec)
//! (events) and [`Codec`](eskit_core::typed::Codec) (single values such as snapshot
//! states). Plug one into an [`EventSchema`](eskit_core::typed::EventSchema) as the
//! writer and keep older ones as readers: every stored event records the name
//! of the codec that wrote it, so a store can hold JSON from last year and
//! CBOR from today.
//!
//! # Events as enums
//! An event enum is stored as its variant's *content*; the variant's name is
//! the event type kept beside the payload, so stored events stay readable
//! from SQL, the CLI and other languages. `Deposited { amount: 5 }` is stored
//! as `{"amount":5}` under the event type `Deposited`, not as
//! `{"Deposited":{"amount":5}}`. `#[serde(rename = "..")]` sets the stored
//! name; old names are aliases in the core's
//! [`EventRegistry`](eskit_core::typed::EventRegistry). [`serde_domain_event!`]
//! implements [`DomainEvent`](eskit_core::typed::DomainEvent) from the serde names.
//! A plain struct works as an event type too. Enums must be externally
//! tagged (serde's default).
//!
//! Encoding and decoding redirect serde's calls without an intermediate
//! value, so the codec costs what the format costs (`benches/codec.rs`).
//!
//! # Nothing unreadable is written
//! A payload that encodes but does not decode would sit in the store and
//! break every later load of its stream. So each codec refuses at encode,
//! with an [`EncodeError`], every value its decoder would not read back as
//! it was: JSON refuses NaN and infinities, both serde codecs refuse nesting
//! past [`limits::MAX_DEPTH`] and `Some(None)`, and Protobuf refuses
//! recursive messages past prost's depth limit. Each codec's docs list what
//! it refuses.
//!
//! # Untrusted input
//! Every decoder has a size cap and a nesting cap ([`limits`]); malformed
//! input is an error, never a panic or an unbounded allocation. The fuzz
//! targets in the workspace's `fuzz/` directory exercise each decoder, and
//! their seed corpus replays as a normal test.
//!
//! # Example
//! A store written with JSON, read after switching the writer to CBOR:
//! ```
//! # #[cfg(all(feature = "json", feature = "cbor"))] {
//! use eskit_codec::{CborCodec, JsonCodec};
//! use eskit_core::{event::{ExpectedVersion, StreamName}, memory::MemoryStore, rt::block_on, typed::{EventSchema, TypedStore}};
//!
//! #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! enum Account {
//!     Opened { owner: String },
//!     Deposited { amount: u64 },
//! }
//! eskit_codec::serde_domain_event!(Account);
//!
//! let backend = MemoryStore::new();
//! let acc = StreamName::new("account", "acc-1")?;
//!
//! let old = TypedStore::new(backend.clone(), EventSchema::new(JsonCodec));
//! block_on(old.append(&acc, ExpectedVersion::NoStream, vec![Account::Opened { owner: "ada".into() }]))?;
//!
//! let new = TypedStore::new(backend, EventSchema::new(CborCodec).with_reader(JsonCodec));
//! block_on(new.append(&acc, ExpectedVersion::Any, vec![Account::Deposited { amount: 5 }]))?;
//!
//! let events = block_on(new.load(&acc))?;
//! assert_eq!(events[0].data, Account::Opened { owner: "ada".into() });
//! assert_eq!(events[1].data, Account::Deposited { amount: 5 });
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! | feature | default | enables |
//! |---|---|---|
//! | `json` | yes | [`JsonCodec`] through serde_json |
//! | `cbor` | no | [`CborCodec`] through ciborium |
//! | `protobuf` | no | [`ProstCodec`] and [`ProstEvent`] through prost |
//!
//! [`TypedUpcasters`], [`event_type_of`] and [`limits`] are always there;
//! [`serde_schema`] needs `json` or `cbor`.
//!

// Items of features this build leaves out are linked to the table above.
#![cfg_attr(not(feature = "json"), doc = "[`JsonCodec`]: crate#feature-flags")]
#![cfg_attr(not(feature = "cbor"), doc = "[`CborCodec`]: crate#feature-flags")]
#![cfg_attr(not(feature = "protobuf"), doc = "[`ProstCodec`]: crate#feature-flags")]
#![cfg_attr(not(feature = "protobuf"), doc = "[`ProstEvent`]: crate#feature-flags")]
#![cfg_attr(
    not(any(feature = "json", feature = "cbor")),
    doc = "[`serde_schema`]: crate#feature-flags"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "json", feature = "cbor"))]
mod adapter;
#[cfg(feature = "cbor")]
mod cbor;
mod error;
#[cfg(any(feature = "json", feature = "cbor"))]
mod guard;
#[cfg(feature = "json")]
mod json;
pub mod limits;
mod name;
#[cfg(feature = "protobuf")]
mod protobuf;
mod upcast;

/// The core crate, re-exported for [`serde_domain_event!`].
pub use eskit_core;

#[cfg(feature = "cbor")]
pub use cbor::CborCodec;
pub use error::{EncodeError, LimitError};
#[cfg(feature = "json")]
pub use json::JsonCodec;
pub use name::{event_type_of, event_types_of};
#[cfg(feature = "protobuf")]
pub use protobuf::{ProstCodec, ProstEvent};
pub use upcast::TypedUpcasters;

/// A schema that writes with `writer` and reads every serde codec this build
/// enables (`json`, `cbor`), whichever codec wrote an event.
///
/// Switching the writer is then a one-line change that never breaks reads
/// of older events.
///
/// ```
/// # #[cfg(feature = "json")] {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Account { Opened { owner: String } }
/// eskit_codec::serde_domain_event!(Account);
///
/// let schema = eskit_codec::serde_schema::<Account>(eskit_codec::JsonCodec);
/// assert_eq!(schema.writer_codec(), "json");
/// # }
/// ```
#[cfg(any(feature = "json", feature = "cbor"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "json", feature = "cbor"))))]
pub fn serde_schema<E>(
    writer: impl eskit_core::typed::EventCodec<E>,
) -> eskit_core::typed::EventSchema<E>
where
    E: eskit_core::typed::DomainEvent + serde::Serialize + serde::de::DeserializeOwned,
{
    let writer_name = writer.name();
    let schema = eskit_core::typed::EventSchema::new(writer);
    #[cfg(feature = "json")]
    let schema = if writer_name == JsonCodec::NAME {
        schema
    } else {
        schema.with_reader(JsonCodec)
    };
    #[cfg(feature = "cbor")]
    let schema = if writer_name == CborCodec::NAME {
        schema
    } else {
        schema.with_reader(CborCodec)
    };
    schema
}
