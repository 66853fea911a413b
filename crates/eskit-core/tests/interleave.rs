//! Tasks sharing one thread interleave on the memory store, because every
//! memory operation yields once. Runs on the core's own `block_on`, no
//! async runtime.

mod common;

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use common::{Counter, CounterCommand, TextCodec};
use eskit_core::{
    error::error_chain,
    event::{EventType, ExpectedVersion, NewEvent, StreamName, Version},
    handler::{CommandContext, CommandHandler, HandleResult, Middleware, Next, RetryPolicy},
    memory::MemoryStore,
    rt::block_on,
    store::{AppendOptions, BoxFuture, EventStore, LoadOptions},
    typed::{EventSchema, TypedStore},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs two futures on one task, polling both each time it is woken, and
/// returns both outputs.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        match (out_a.take(), out_b.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (out_a, out_b) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

#[test]
fn two_append_loops_on_one_thread_alternate() -> TestResult {
    const ROUNDS: usize = 50;
    let store = MemoryStore::new();
    let order = Mutex::new(Vec::new());
    let writer = |name: &'static str| {
        let (store, order) = (&store, &order);
        async move {
            let stream = StreamName::new("loop", name)?;
            for _ in 0..ROUNDS {
                let event = NewEvent::new(EventType::new("Ticked")?, Vec::new());
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event],
                        AppendOptions::new(),
                    )
                    .await?;
                order.lock().map_err(|_| "poisoned")?.push(name);
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    let (a, b) = block_on(join(writer("a"), writer("b")));
    a?;
    b?;
    let order = order.into_inner().map_err(|_| "poisoned")?;
    assert_eq!(order.len(), 2 * ROUNDS);
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(
        switches,
        2 * ROUNDS - 1,
        "each append let the other loop run: {order:?}"
    );
    Ok(())
}

/// Counts the conflicts the layers inside it return.
struct CountConflicts(Arc<AtomicUsize>);

impl Middleware<Counter> for CountConflicts {
    fn handle<'a>(
        &'a self,
        ctx: CommandContext<'a, CounterCommand>,
        next: Next<'a, Counter>,
    ) -> BoxFuture<'a, HandleResult<Counter>> {
        Box::pin(async move {
            let r = next.run(ctx).await;
            if matches!(&r, Err(e) if e.is_conflict()) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }
}

#[test]
fn two_command_loops_on_one_thread_contend() -> TestResult {
    const COMMANDS: u64 = 50;
    let store = MemoryStore::new();
    let conflicts = Arc::new(AtomicUsize::new(0));
    let handler = CommandHandler::builder(
        Counter,
        TypedStore::new(store.clone(), EventSchema::new(TextCodec)),
    )
    .with_conflict_retry(RetryPolicy::new(100)?.with_base_delay(std::time::Duration::ZERO))
    .with_middleware(CountConflicts(Arc::clone(&conflicts)))
    .build()?;
    let stream = StreamName::new("counter", "shared")?;
    let writer = || async {
        for _ in 0..COMMANDS {
            handler
                .handle(&stream, &CounterCommand::Add(1))
                .await
                .map_err(|e| error_chain(&e))?;
        }
        Ok::<_, String>(())
    };
    let (a, b) = block_on(join(writer(), writer()));
    a?;
    b?;
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "one loop's load and append let the other one in"
    );
    let events = block_on(store.load(&stream, LoadOptions::new()))?;
    assert_eq!(events.len() as u64, 2 * COMMANDS);
    assert_eq!(
        block_on(handler.load_state(&stream))?,
        (2 * COMMANDS, Version::new(2 * COMMANDS))
    );
    Ok(())
}
