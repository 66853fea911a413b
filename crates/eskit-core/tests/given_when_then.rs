//! The Given/When/Then helpers pass on matches and explain mismatches.

mod common;

use common::{Counter, CounterCommand, CounterEvent};
use eskit_core::{
    event::RecordedEvent,
    testing::{DeciderTest, ProjectionTest},
};

#[test]
fn decider_specs() -> Result<(), eskit_core::testing::SpecFailure> {
    DeciderTest::new(&Counter)
        .given([CounterEvent::Added(2)])
        .when(CounterCommand::Add(3))
        .then_expect([CounterEvent::Added(3)])?;
    DeciderTest::new(&Counter)
        .when(CounterCommand::Add(0))
        .then_no_events()?;
    DeciderTest::new(&Counter)
        .given([CounterEvent::Added(u64::MAX)])
        .when(CounterCommand::Add(1))
        .then_error("overflow")?;
    DeciderTest::new(&Counter)
        .given([CounterEvent::Added(u64::MAX)])
        .when(CounterCommand::Add(1))
        .then_error_matches(|e| *e == common::Overflow)?;
    DeciderTest::new(&Counter)
        .given([CounterEvent::Added(4)])
        .when(CounterCommand::Reset)
        .then_state(0)?;
    Ok(())
}

#[test]
fn mismatches_are_explained() {
    let wrong = DeciderTest::new(&Counter)
        .when(CounterCommand::Add(3))
        .then_expect([CounterEvent::Added(4)])
        .expect_err("must fail");
    let text = wrong.to_string();
    assert!(
        text.starts_with("events differ (- expected, + actual):"),
        "{text}"
    );
    assert!(
        text.contains("-         4,") && text.contains("+         3,"),
        "{text}"
    );

    let rejected = DeciderTest::new(&Counter)
        .given([CounterEvent::Added(u64::MAX)])
        .when(CounterCommand::Add(1))
        .then_expect([])
        .expect_err("must fail");
    assert!(rejected.to_string().contains("counter would overflow"));

    let no_error = DeciderTest::new(&Counter)
        .when(CounterCommand::Add(1))
        .then_error("x")
        .expect_err("must fail");
    assert!(no_error.to_string().contains("got events"));

    let no_command = DeciderTest::new(&Counter)
        .then_no_events()
        .expect_err("must fail");
    assert!(no_command.to_string().contains("no command"));
}

#[test]
fn projection_specs() {
    // State: (events seen, last version seen, Added events).
    let count_added = |(seen, _, added): (u64, u64, u64), e: &RecordedEvent<CounterEvent>| {
        (
            seen + 1,
            e.version.get(),
            added + u64::from(matches!(e.data, CounterEvent::Added(_))),
        )
    };
    assert!(
        ProjectionTest::new((0, 0, 0), count_added)
            .given([
                CounterEvent::Added(1),
                CounterEvent::Reset,
                CounterEvent::Added(2)
            ])
            .then_expect((3, 3, 2))
            .is_ok()
    );
    let failure = ProjectionTest::new((0, 0, 0), count_added)
        .given([CounterEvent::Added(1)])
        .then_expect((1, 1, 5))
        .expect_err("must fail");
    assert!(
        failure.to_string().contains("-     5,\n+     1,"),
        "{failure}"
    );
}
