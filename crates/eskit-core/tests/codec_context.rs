//! Encode context: the typed layer's codecs see the stream and metadata of
//! each event, so an encrypting codec can choose a key per data subject,
//! on appends, loads, global reads, handlers and dispatch alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use eskit_core::{
    error::{BoxError, CodecError, StoreError},
    event::{ExpectedVersion, Metadata, NewEvent, StreamName},
    handler::{CommandHandler, Decider},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions},
    typed::{
        CodecContext, Dispatched, Dispatcher, DomainEvent, EventCodec, EventRegistry, EventSchema,
        TypedStore, UpcasterRegistry,
    },
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Clone, PartialEq)]
struct Diagnosed(String);

impl DomainEvent for Diagnosed {
    fn event_type(&self) -> &'static str {
        "Diagnosed"
    }
    fn event_types() -> &'static [&'static str] {
        &["Diagnosed"]
    }
}

/// Readable prefix of every plaintext, so a wrong key is detected rather
/// than decoding to garbage.
const MAGIC: &[u8] = b"ok:";

/// A toy encrypting codec: XOR with a one-byte key per data subject. The
/// subject is the metadata entry `subject` when present, else the stream
/// id. Forgetting a subject's key makes its events unreadable.
#[derive(Clone, Default)]
struct Sealed {
    keys: Arc<Mutex<HashMap<String, u8>>>,
}

impl Sealed {
    fn with_key(self, subject: &str, key: u8) -> Self {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(subject.to_owned(), key);
        self
    }

    fn forget(&self, subject: &str) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(subject);
    }

    fn key(&self, cx: &CodecContext<'_>) -> Result<u8, BoxError> {
        let subject = cx
            .metadata()
            .extra_value("subject")
            .unwrap_or_else(|| cx.stream().stream_id().as_str());
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subject)
            .copied()
            .ok_or_else(|| format!("no key for subject {subject}").into())
    }
}

impl EventCodec<Diagnosed> for Sealed {
    fn name(&self) -> &'static str {
        "sealed"
    }
    fn encode(&self, _: &Diagnosed, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Err(CodecError::encode(Some("Diagnosed"), "needs a context"))
    }
    fn decode(&self, ty: &str, _: &[u8]) -> Result<Diagnosed, CodecError> {
        Err(CodecError::decode(Some(ty), "needs a context"))
    }
    fn encode_with(
        &self,
        e: &Diagnosed,
        cx: &CodecContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let k = self
            .key(cx)
            .map_err(|e| CodecError::encode(Some(cx.event_type()), e))?;
        out.extend(MAGIC.iter().chain(e.0.as_bytes()).map(|b| b ^ k));
        Ok(())
    }
    fn decode_with(&self, cx: &CodecContext<'_>, payload: &[u8]) -> Result<Diagnosed, CodecError> {
        let ty = Some(cx.event_type());
        let k = self.key(cx).map_err(|e| CodecError::decode(ty, e))?;
        let plain: Vec<u8> = payload.iter().map(|b| b ^ k).collect();
        let text = plain
            .strip_prefix(MAGIC)
            .ok_or_else(|| CodecError::decode(ty, "wrong key"))?;
        String::from_utf8(text.to_vec())
            .map(Diagnosed)
            .map_err(|e| CodecError::decode(ty, e))
    }
}

fn patient(id: &str) -> Result<StreamName, Box<dyn std::error::Error>> {
    Ok(StreamName::new("patient", id)?)
}

fn is_decode_error(err: &StoreError) -> bool {
    matches!(err, StoreError::Codec(CodecError::Decode { .. }))
}

#[test]
fn a_codec_keyed_by_stream_round_trips_and_another_subjects_key_fails() -> TestResult {
    let codec = Sealed::default()
        .with_key("p-1", 0x21)
        .with_key("p-2", 0x42);
    let backend = MemoryStore::new();
    let store = TypedStore::new(backend.clone(), EventSchema::new(codec.clone()));
    let (p1, p2) = (patient("p-1")?, patient("p-2")?);
    let flu = Diagnosed("flu".into());
    let appended = block_on(store.append(&p1, ExpectedVersion::NoStream, vec![flu.clone()]))?;
    assert_eq!(appended[0].data, flu);
    assert_eq!(block_on(store.load(&p1))?[0].data, flu);

    // Stored encrypted, under p-1's key.
    let raw = block_on(backend.load(&p1, LoadOptions::new()))?;
    assert_ne!(raw[0].payload, b"ok:flu");
    assert!(!raw[0].payload.windows(3).any(|w| w == b"flu"));

    // The same bytes in p-2's stream are decoded with p-2's key: refused.
    let copy = NewEvent::new(raw[0].event_type.clone(), raw[0].payload.clone())
        .with_codec(raw[0].codec.to_string());
    block_on(backend.append(
        &p2,
        ExpectedVersion::NoStream,
        vec![copy],
        AppendOptions::new(),
    ))?;
    let err = block_on(store.load(&p2))
        .err()
        .ok_or("expected a decode error")?;
    assert!(is_decode_error(&err), "{err:?}");

    // A global read decodes each event with its own stream's key.
    let page = block_on(store.read(ReadOptions::from_start(10)));
    assert!(page.is_err_and(|e| is_decode_error(&e)), "p-2's copy fails");

    // Forgetting p-1's key makes its events unreadable (crypto-shredding).
    codec.forget("p-1");
    let err = block_on(store.load(&p1))
        .err()
        .ok_or("expected a decode error")?;
    assert!(is_decode_error(&err), "{err:?}");
    Ok(())
}

#[test]
fn a_codec_keyed_by_a_metadata_entry_sees_the_stored_metadata() -> TestResult {
    let codec = Sealed::default()
        .with_key("alice", 0x11)
        .with_key("bob", 0x77);
    let backend = MemoryStore::new();
    let store = TypedStore::new(backend.clone(), EventSchema::new(codec));
    let ward = StreamName::new("ward", "w-1")?;
    let alice = AppendOptions::new().with_metadata(Metadata::new().with_extra("subject", "alice"));
    let event = Diagnosed("cold".into());
    block_on(store.append_with(&ward, ExpectedVersion::NoStream, vec![event.clone()], alice))?;
    assert_eq!(block_on(store.load(&ward))?[0].data, event);

    // Same stream, the bytes stored again but with bob named as subject.
    let raw = block_on(backend.load(&ward, LoadOptions::new()))?;
    let copy = NewEvent::new(raw[0].event_type.clone(), raw[0].payload.clone())
        .with_codec(raw[0].codec.to_string());
    let bob = AppendOptions::new().with_metadata(Metadata::new().with_extra("subject", "bob"));
    block_on(backend.append(&ward, ExpectedVersion::Any, vec![copy], bob))?;
    let err = block_on(store.load(&ward))
        .err()
        .ok_or("expected a decode error")?;
    assert!(is_decode_error(&err), "{err:?}");

    // No key for the subject: the append is refused, nothing is stored.
    let carol = AppendOptions::new().with_metadata(Metadata::new().with_extra("subject", "carol"));
    let refused = block_on(store.append_with(&ward, ExpectedVersion::Any, vec![event], carol));
    assert!(matches!(
        refused,
        Err(StoreError::Codec(CodecError::Encode { .. }))
    ));
    assert_eq!(block_on(backend.load(&ward, LoadOptions::new()))?.len(), 2);
    Ok(())
}

struct Chart;

impl Decider for Chart {
    type State = Vec<String>;
    type Command = String;
    type Event = Diagnosed;
    type Error = std::convert::Infallible;
    fn initial_state(&self) -> Vec<String> {
        Vec::new()
    }
    fn decide(&self, _: &Vec<String>, cmd: &String) -> Result<Vec<Diagnosed>, Self::Error> {
        Ok(vec![Diagnosed(cmd.clone())])
    }
    fn evolve(&self, mut state: Vec<String>, e: &Diagnosed) -> Vec<String> {
        state.push(e.0.clone());
        state
    }
}

#[test]
fn the_command_handler_and_dispatch_go_through_the_context() -> TestResult {
    let codec = Sealed::default().with_key("p-3", 0x5c);
    let schema = Arc::new(EventSchema::new(codec.clone()));
    let backend = MemoryStore::new();
    let store = TypedStore::new(backend.clone(), EventSchema::new(codec));
    let handler = CommandHandler::new(Chart, store);
    let p3 = patient("p-3")?;
    block_on(handler.handle(&p3, &"asthma".to_owned()))?;
    let after = block_on(handler.handle(&p3, &"flu".to_owned()))?;
    assert_eq!(after.state, ["asthma", "flu"]);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = Dispatcher::new().on(Arc::clone(&schema), {
        let seen = Arc::clone(&seen);
        move |e, ()| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.data.0);
            std::future::ready(Ok::<(), BoxError>(()))
        }
    });
    for raw in block_on(backend.read(ReadOptions::from_start(10)))?.events {
        assert_eq!(
            block_on(dispatcher.dispatch(raw, &()))?,
            Dispatched::Handled(1)
        );
    }
    assert_eq!(
        *seen.lock().unwrap_or_else(PoisonError::into_inner),
        ["asthma", "flu"]
    );
    Ok(())
}

#[test]
fn upcasters_of_an_encrypting_codec_see_the_context() -> TestResult {
    let codec = Sealed::default().with_key("p-4", 0x33);
    let backend = MemoryStore::new();
    let p4 = patient("p-4")?;
    // Written at schema version 1.
    let old = TypedStore::new(backend.clone(), EventSchema::new(codec.clone()));
    block_on(old.append(
        &p4,
        ExpectedVersion::NoStream,
        vec![Diagnosed("flu".into())],
    ))?;

    // Version 2 spells diagnoses in capitals: the step decrypts with the
    // subject's key, rewrites, and encrypts again.
    let mut registry = EventRegistry::new();
    registry.register_versioned("Diagnosed", 2)?;
    let mut upcasters = UpcasterRegistry::new();
    let keys = codec.clone();
    upcasters.register_for_codec_in_context("Diagnosed", "sealed", 1, 2, move |cx, b| {
        let v1 = keys.decode_with(cx, b)?;
        let mut out = Vec::new();
        keys.encode_with(&Diagnosed(v1.0.to_uppercase()), cx, &mut out)?;
        Ok(out)
    })?;
    let new = TypedStore::new(
        backend,
        EventSchema::new(codec)
            .with_registry(registry)
            .with_upcasters(upcasters.clone()),
    );
    let events = block_on(new.load(&p4))?;
    assert_eq!(events[0].data, Diagnosed("FLU".into()));
    assert_eq!(
        events[0].schema_version, 1,
        "the stored version is reported"
    );

    // Without a context, such a step cannot run, and says so.
    let raw = block_on(new.load_raw(&p4, LoadOptions::new()))?;
    let err = upcasters.upcast("Diagnosed", "sealed", &raw[0].payload, 1, 2);
    assert!(
        matches!(err, Err(CodecError::Upcast { from: 1, .. })),
        "{err:?}"
    );
    Ok(())
}

/// A codec that seals each payload with the tenant it sees on encode and
/// refuses to open it under another tenant (a per-tenant key, in effect).
struct PerTenant;

impl EventCodec<Diagnosed> for PerTenant {
    fn name(&self) -> &'static str {
        "per-tenant"
    }
    fn encode(&self, _: &Diagnosed, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Err(CodecError::encode(Some("Diagnosed"), "needs a context"))
    }
    fn decode(&self, ty: &str, _: &[u8]) -> Result<Diagnosed, CodecError> {
        Err(CodecError::decode(Some(ty), "needs a context"))
    }
    fn encode_with(
        &self,
        e: &Diagnosed,
        cx: &CodecContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let tenant = cx.tenant().map_or("-", |t| t.as_str());
        out.extend_from_slice(format!("{tenant}|{}", e.0).as_bytes());
        Ok(())
    }
    fn decode_with(&self, cx: &CodecContext<'_>, payload: &[u8]) -> Result<Diagnosed, CodecError> {
        let ty = Some(cx.event_type());
        let text = std::str::from_utf8(payload).map_err(|e| CodecError::decode(ty, e))?;
        let (sealed_for, data) = text
            .split_once('|')
            .ok_or_else(|| CodecError::decode(ty, "not sealed"))?;
        let tenant = cx.tenant().map_or("-", |t| t.as_str());
        if sealed_for != tenant {
            return Err(CodecError::decode(ty, "sealed for another tenant"));
        }
        Ok(Diagnosed(data.to_owned()))
    }
}

#[test]
fn codecs_see_the_tenant_on_encode_and_decode() -> TestResult {
    use eskit_core::event::TenantId;
    use eskit_core::store::TenantScoped;
    let backend = MemoryStore::new();
    let store = TypedStore::new(backend.clone(), EventSchema::new(PerTenant));
    let clinic = store.for_tenant(TenantId::new("clinic-a")?);
    let p1 = patient("p-1")?;
    let flu = Diagnosed("flu".into());
    block_on(clinic.append(&p1, ExpectedVersion::NoStream, vec![flu.clone()]))?;
    let raw = block_on(
        backend
            .for_tenant(TenantId::new("clinic-a")?)
            .load(&p1, LoadOptions::new()),
    )?;
    assert_eq!(raw[0].payload, b"clinic-a|flu");
    assert_eq!(block_on(clinic.load(&p1))?[0].data, flu);
    // An unscoped store's codec sees no tenant on either side.
    let p2 = patient("p-2")?;
    block_on(store.append(&p2, ExpectedVersion::NoStream, vec![flu.clone()]))?;
    assert_eq!(
        block_on(backend.load(&p2, LoadOptions::new()))?[0].payload,
        b"-|flu"
    );
    assert_eq!(block_on(store.load(&p2))?[0].data, flu);
    Ok(())
}
