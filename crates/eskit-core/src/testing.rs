//! Given/When/Then helpers for deciders and projections. They return a
//! [`SpecFailure`] with a readable diff instead of panicking, so tests use `?`.

use std::fmt;

use crate::decider::Decider;
use crate::event::{EventHeader, RecordedEvent};
use crate::id::EventId;
use crate::metadata::Metadata;
use crate::name::{EventType, StreamName};
use crate::time::Timestamp;
use crate::version::{Position, Version};

pub use crate::dcb_decider::DcbDeciderTest;

/// A failed expectation, with a line diff of expected versus actual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFailure {
    message: String,
}

impl SpecFailure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    pub(crate) fn diff<T: fmt::Debug + ?Sized, U: fmt::Debug + ?Sized>(
        what: &str,
        expected: &T,
        actual: &U,
    ) -> Self {
        Self::new(format!(
            "{what} differ (- expected, + actual):\n{}",
            line_diff(&format!("{expected:#?}"), &format!("{actual:#?}"))
        ))
    }
}

impl fmt::Display for SpecFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecFailure {}

/// A unified-style line diff (longest common subsequence; inputs are small).
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

/// Given/When/Then for a decider: history, command, expected outcome.
///
/// ```
/// use eskit_core::{handler::Decider, testing::DeciderTest};
/// # struct Counter;
/// # #[derive(Debug)] struct Negative;
/// # impl std::fmt::Display for Negative { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("would go negative") } }
/// # impl std::error::Error for Negative {}
/// # impl Decider for Counter {
/// #     type State = i64; type Command = i64; type Event = i64; type Error = Negative;
/// #     fn initial_state(&self) -> i64 { 0 }
/// #     fn decide(&self, s: &i64, c: &i64) -> Result<Vec<i64>, Negative> { if s + c < 0 { Err(Negative) } else { Ok(vec![*c]) } }
/// #     fn evolve(&self, s: i64, e: &i64) -> i64 { s + e }
/// # }
/// DeciderTest::new(&Counter).given([5]).when(-2).then_expect([-2])?;
/// DeciderTest::new(&Counter).given([1]).when(-2).then_error("negative")?;
/// # Ok::<(), eskit_core::testing::SpecFailure>(())
/// ```
pub struct DeciderTest<'d, D: Decider> {
    decider: &'d D,
    given: Vec<D::Event>,
    when: Option<D::Command>,
}

impl<D: Decider> fmt::Debug for DeciderTest<'_, D>
where
    D::Event: fmt::Debug,
    D::Command: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeciderTest")
            .field("given", &self.given)
            .field("when", &self.when)
            .finish()
    }
}

impl<'d, D: Decider> DeciderTest<'d, D>
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

    /// The events that happened before.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// The command under test.
    #[must_use]
    pub fn when(mut self, command: D::Command) -> Self {
        self.when = Some(command);
        self
    }

    fn decide(&self) -> Result<Result<Vec<D::Event>, D::Error>, SpecFailure> {
        let command = self
            .when
            .as_ref()
            .ok_or_else(|| SpecFailure::new("no command: call when(..) before then_*"))?;
        let state = self.decider.fold(&self.given);
        Ok(self.decider.decide(&state, command))
    }

    /// Expects exactly these events.
    ///
    /// # Errors
    /// [`SpecFailure`] with a diff, or naming the unexpected error.
    pub fn then_expect(
        self,
        expected: impl IntoIterator<Item = D::Event>,
    ) -> Result<(), SpecFailure> {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        match self.decide()? {
            Ok(actual) if actual == expected => Ok(()),
            Ok(actual) => Err(SpecFailure::diff("events", &expected, &actual)),
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
        match self.decide()? {
            Err(e) if e.to_string().contains(needle) => Ok(()),
            Err(e) => Err(SpecFailure::new(format!(
                "expected an error containing {needle:?}, got: {e}"
            ))),
            Ok(events) => Err(SpecFailure::new(format!(
                "expected an error containing {needle:?}, got events {events:#?}"
            ))),
        }
    }

    /// Expects a rejection matching `check`.
    ///
    /// # Errors
    /// [`SpecFailure`] when events were produced or `check` returns false.
    pub fn then_error_matches(
        self,
        check: impl FnOnce(&D::Error) -> bool,
    ) -> Result<(), SpecFailure> {
        match self.decide()? {
            Err(e) if check(&e) => Ok(()),
            Err(e) => Err(SpecFailure::new(format!("the error did not match: {e}"))),
            Ok(events) => Err(SpecFailure::new(format!(
                "expected an error, got events {events:#?}"
            ))),
        }
    }

    /// Expects this state after the history and the command's events.
    ///
    /// # Errors
    /// [`SpecFailure`] with a diff, or naming the unexpected error.
    pub fn then_state(self, expected: D::State) -> Result<(), SpecFailure>
    where
        D::State: fmt::Debug + PartialEq,
    {
        let events = match self.decide()? {
            Ok(events) => events,
            Err(e) => return Err(SpecFailure::new(format!("the command was rejected: {e}"))),
        };
        let state = self
            .decider
            .fold_from(self.decider.fold(&self.given), &events);
        if state == expected {
            Ok(())
        } else {
            Err(SpecFailure::diff("states", &expected, &state))
        }
    }
}

/// Given/Then for a projection: a fold of recorded events into a read model.
///
/// Events get synthetic envelopes: stream `test/1`, versions and positions
/// from 1, the Unix epoch plus one second per event as timestamp.
///
/// ```
/// use eskit_core::{event::RecordedEvent, testing::ProjectionTest};
/// let total = |sum: u64, e: &RecordedEvent<u64>| sum + e.data;
/// ProjectionTest::new(0, total).given([3, 4]).then_expect(7)?;
/// # Ok::<(), eskit_core::testing::SpecFailure>(())
/// ```
pub struct ProjectionTest<S, E, F> {
    state: S,
    apply: F,
    events: Vec<E>,
}

impl<S: fmt::Debug, E: fmt::Debug, F> fmt::Debug for ProjectionTest<S, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionTest")
            .field("state", &self.state)
            .field("events", &self.events)
            .finish()
    }
}

impl<S, E, F> ProjectionTest<S, E, F>
where
    S: fmt::Debug + PartialEq,
    F: FnMut(S, &RecordedEvent<E>) -> S,
{
    /// A test starting from `initial`, applying events with `apply`.
    pub fn new(initial: S, apply: F) -> Self {
        Self {
            state: initial,
            apply,
            events: Vec::new(),
        }
    }

    /// Events to apply, in order.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = E>) -> Self {
        self.events.extend(events);
        self
    }

    /// Expects this read model after all events.
    ///
    /// # Errors
    /// [`SpecFailure`] with a diff.
    pub fn then_expect(self, expected: S) -> Result<(), SpecFailure> {
        let Self {
            mut state,
            mut apply,
            events,
        } = self;
        let stream = StreamName::new("test", "1").map_err(|e| SpecFailure::new(e.to_string()))?;
        let event_type =
            EventType::from_static("TestEvent").map_err(|e| SpecFailure::new(e.to_string()))?;
        for (i, data) in events.into_iter().enumerate() {
            let n = i as u64 + 1;
            let recorded = RecordedEvent {
                header: EventHeader {
                    id: EventId::new(),
                    stream: stream.clone(),
                    version: Version::new(n),
                    position: Position::new(n),
                    tx: 0,
                    event_type: event_type.clone(),
                    schema_version: 1,
                    timestamp: Timestamp::from_unix_micros(n as i64 * 1_000_000),
                    metadata: Metadata::new(),
                    tags: crate::event::Tags::new(),
                    tenant: None,
                },
                data,
            };
            state = apply(state, &recorded);
        }
        if state == expected {
            Ok(())
        } else {
            Err(SpecFailure::diff("read models", &expected, &state))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines() {
        let d = line_diff("a\nb\nc", "a\nx\nc");
        assert_eq!(d, "  a\n- b\n+ x\n  c\n");
    }
}
