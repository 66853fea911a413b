//! Encode and decode cost per event of each codec, next to the format
//! library called directly on the same content (the codec layer's overhead).
//!
//! Run with `cargo bench -p eskit-codec --all-features --bench codec`
//! (`-- --workload json` filters). Prints a markdown table; when
//! `ESKIT_BENCH_JSON` names a file, appends one JSON object per row to it.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

#[allow(unused_imports)]
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use eskit_core::typed::EventCodec;
#[allow(unused_imports)]
use fixtures::{BankEvent, reference_event};
use serde::{Deserialize, Serialize};

/// The content of the reference event, as an application would store it
/// with the format library alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AccountOpened {
    account_id: String,
    owner: String,
    currency: String,
    opened_at: u64,
    tags: Vec<String>,
}

#[allow(dead_code)]
fn reference_content() -> AccountOpened {
    match reference_event() {
        BankEvent::AccountOpened {
            account_id,
            owner,
            currency,
            opened_at,
            tags,
        } => AccountOpened {
            account_id,
            owner,
            currency,
            opened_at,
            tags,
        },
        _ => AccountOpened {
            account_id: String::new(),
            owner: String::new(),
            currency: String::new(),
            opened_at: 0,
            tags: Vec::new(),
        },
    }
}

#[allow(dead_code)]
fn into_event(c: AccountOpened) -> BankEvent {
    BankEvent::AccountOpened {
        account_id: c.account_id,
        owner: c.owner,
        currency: c.currency,
        opened_at: c.opened_at,
        tags: c.tags,
    }
}

/// One row: the codec and the direct call doing the same work.
struct Workload {
    name: &'static str,
    eskit: Box<dyn FnMut()>,
    direct: Box<dyn FnMut()>,
}

/// Measured ns per call of `f`: median of interleaved batches.
fn measure(eskit: &mut dyn FnMut(), direct: &mut dyn FnMut()) -> (f64, f64) {
    const BATCHES: usize = 21;
    const BATCH_TIME: Duration = Duration::from_millis(40);
    // Warm up and size a batch to about BATCH_TIME.
    let mut iters = 1u32;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            eskit();
            direct();
        }
        if start.elapsed() >= BATCH_TIME / 2 || iters >= 1 << 24 {
            break;
        }
        iters *= 2;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..iters {
            eskit();
        }
        a.push(start.elapsed().as_nanos() as f64 / f64::from(iters));
        let start = Instant::now();
        for _ in 0..iters {
            direct();
        }
        b.push(start.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    (median(&mut a), median(&mut b))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The event type name as a hand-written `DomainEvent` impl returns it.
fn hand_written_event_type(e: &BankEvent) -> &'static str {
    match e {
        BankEvent::AccountOpened { .. } => "AccountOpened",
        BankEvent::Deposited { .. } => "MoneyDeposited",
        BankEvent::Withdrawn(_) => "Withdrawn",
        BankEvent::Flagged(..) => "Flagged",
        BankEvent::Closed => "Closed",
    }
}

#[allow(unused_mut, clippy::vec_init_then_push)]
fn workloads() -> Vec<Workload> {
    let mut w: Vec<Workload> = Vec::new();
    {
        use eskit_core::typed::DomainEvent as _;
        let event = reference_event();
        let event2 = reference_event();
        w.push(Workload {
            name: "event-type-name",
            eskit: Box::new(move || {
                black_box(black_box(&event).event_type());
            }),
            direct: Box::new(move || {
                black_box(hand_written_event_type(black_box(&event2)));
            }),
        });
    }
    #[cfg(feature = "json")]
    {
        use eskit_codec::JsonCodec;
        let event = reference_event();
        let content = reference_content();
        let mut buf = Vec::with_capacity(512);
        let mut buf2 = Vec::with_capacity(512);
        w.push(Workload {
            name: "json-encode",
            eskit: Box::new(move || {
                buf.clear();
                let _ = EventCodec::encode(&JsonCodec, black_box(&event), &mut buf);
                black_box(&buf);
            }),
            direct: Box::new(move || {
                buf2.clear();
                let _ = serde_json::to_writer(&mut buf2, black_box(&content));
                black_box(&buf2);
            }),
        });
        let mut payload = Vec::new();
        let _ = EventCodec::encode(&JsonCodec, &reference_event(), &mut payload);
        let payload2 = payload.clone();
        w.push(Workload {
            name: "json-decode",
            eskit: Box::new(move || {
                let e: Result<BankEvent, _> =
                    EventCodec::decode(&JsonCodec, "AccountOpened", black_box(&payload));
                black_box(e).ok();
            }),
            direct: Box::new(move || {
                let e =
                    serde_json::from_slice::<AccountOpened>(black_box(&payload2)).map(into_event);
                black_box(e).ok();
            }),
        });
    }
    #[cfg(feature = "cbor")]
    {
        use eskit_codec::CborCodec;
        let event = reference_event();
        let content = reference_content();
        let mut buf = Vec::with_capacity(512);
        let mut buf2 = Vec::with_capacity(512);
        w.push(Workload {
            name: "cbor-encode",
            eskit: Box::new(move || {
                buf.clear();
                let _ = EventCodec::encode(&CborCodec, black_box(&event), &mut buf);
                black_box(&buf);
            }),
            direct: Box::new(move || {
                buf2.clear();
                let _ = ciborium::into_writer(black_box(&content), &mut buf2);
                black_box(&buf2);
            }),
        });
        let mut payload = Vec::new();
        let _ = EventCodec::encode(&CborCodec, &reference_event(), &mut payload);
        let payload2 = payload.clone();
        w.push(Workload {
            name: "cbor-decode",
            eskit: Box::new(move || {
                let e: Result<BankEvent, _> =
                    EventCodec::decode(&CborCodec, "AccountOpened", black_box(&payload));
                black_box(e).ok();
            }),
            direct: Box::new(move || {
                let e = ciborium::from_reader::<AccountOpened, _>(black_box(&payload2[..]))
                    .map(into_event);
                black_box(e).ok();
            }),
        });
    }
    #[cfg(feature = "protobuf")]
    {
        use eskit_codec::ProstCodec;
        use fixtures::bank;
        use prost::Message as _;
        let event = fixtures::reference_proto_event();
        let bank::bank_event::Event::AccountOpened(content) = event.clone() else {
            return w;
        };
        let mut buf = Vec::with_capacity(512);
        let mut buf2 = Vec::with_capacity(512);
        w.push(Workload {
            name: "protobuf-encode",
            eskit: Box::new(move || {
                buf.clear();
                let _ = EventCodec::encode(&ProstCodec, black_box(&event), &mut buf);
                black_box(&buf);
            }),
            direct: Box::new(move || {
                buf2.clear();
                let _ = black_box(&content).encode(&mut buf2);
                black_box(&buf2);
            }),
        });
        let mut payload = Vec::new();
        let _ = EventCodec::encode(
            &ProstCodec,
            &fixtures::reference_proto_event(),
            &mut payload,
        );
        let payload2 = payload.clone();
        w.push(Workload {
            name: "protobuf-decode",
            eskit: Box::new(move || {
                let e: Result<bank::bank_event::Event, _> =
                    EventCodec::decode(&ProstCodec, "AccountOpened", black_box(&payload));
                black_box(e).ok();
            }),
            direct: Box::new(move || {
                let e = bank::AccountOpened::decode(black_box(&payload2[..]))
                    .map(bank::bank_event::Event::AccountOpened);
                black_box(e).ok();
            }),
        });
    }
    w
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = args
        .iter()
        .position(|a| a == "--workload")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut json_out = std::env::var_os("ESKIT_BENCH_JSON").and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| eprintln!("cannot open {}: {e}", path.to_string_lossy()))
            .ok()
    });
    println!("| workload | eskit ns/event | direct ns/event | ratio |");
    println!("|---|---:|---:|---:|");
    for mut w in workloads() {
        if filter.as_deref().is_some_and(|f| !w.name.contains(f)) {
            continue;
        }
        let (eskit, direct) = measure(&mut *w.eskit, &mut *w.direct);
        let ratio = eskit / direct;
        println!("| {} | {eskit:.1} | {direct:.1} | {ratio:.2} |", w.name);
        if let Some(file) = json_out.as_mut() {
            let line = format!(
                "{{\"backend\":\"codec\",\"workload\":\"{}\",\"impl\":\"eskit\",\"ns_per_event\":{eskit:.1},\"baseline_ns_per_event\":{direct:.1},\"ratio\":{ratio:.3}}}\n",
                w.name
            );
            if let Err(e) = file.write_all(line.as_bytes()) {
                eprintln!("cannot write bench json: {e}");
            }
        }
    }
}
