//! The typed DCB layer on the memory store: the handler reads by query,
//! decides, appends with the condition and decides again when it fails.

#![allow(clippy::expect_used, clippy::panic)] // test fixtures

use std::sync::Arc;
use std::time::Duration;

use eskit_core::{
    dcb::{DcbDecider, DcbHandler, EventQuery, QueryItem, Tagged},
    error::{CodecError, StoreError},
    event::{EventType, ExpectedVersion, NewEvent, RecordedEvent, StreamName, Tag},
    handler::{HandleError, RetryPolicy},
    memory::MemoryStore,
    rt::block_on,
    store::AppendOptions,
    testing::{DcbDeciderTest, SpecFailure},
    typed::{DomainEvent, EventCodec, EventSchema, TypedStore},
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A student enrolled in a course.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Enrolled {
    student: u8,
    course: u8,
}

impl DomainEvent for Enrolled {
    fn event_type(&self) -> &'static str {
        "Enrolled"
    }
    fn event_types() -> &'static [&'static str] {
        &["Enrolled"]
    }
}

struct Bytes;

impl EventCodec<Enrolled> for Bytes {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, e: &Enrolled, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend([e.student, e.course]);
        Ok(())
    }
    fn decode(&self, ty: &str, b: &[u8]) -> Result<Enrolled, CodecError> {
        match b {
            [student, course] => Ok(Enrolled {
                student: *student,
                course: *course,
            }),
            _ => Err(CodecError::decode(Some(ty), "expected two bytes")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Refused {
    CourseFull,
    TooManyCourses,
    AlreadyEnrolled,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CourseFull => "course is full",
            Self::TooManyCourses => "student takes too many courses",
            Self::AlreadyEnrolled => "already enrolled",
        })
    }
}

impl std::error::Error for Refused {}

/// Enrolment with a course capacity and a per-student limit.
struct Enrolment {
    capacity: usize,
    per_student: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    in_course: usize,
    of_student: usize,
    already: bool,
}

/// The command's student and course, and what the selected events say.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    command: Option<(u8, u8)>,
    seen: Seen,
}

fn tag(s: String) -> Tag {
    Tag::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn course(c: u8) -> Tag {
    tag(format!("course:{c}"))
}

fn student(s: u8) -> Tag {
    tag(format!("student:{s}"))
}

impl DcbDecider for Enrolment {
    type State = Counts;
    type Command = Enrolled;
    type Event = Enrolled;
    type Error = Refused;

    fn query(&self, c: &Enrolled) -> EventQuery {
        let enrolled = EventType::from_static("Enrolled").unwrap_or_else(|e| panic!("{e}"));
        EventQuery::new()
            .with_item(
                QueryItem::new()
                    .with_event_types([enrolled.clone()])
                    .with_tags([course(c.course)]),
            )
            .with_item(
                QueryItem::new()
                    .with_event_types([enrolled])
                    .with_tags([student(c.student)]),
            )
    }

    fn stream(&self, c: &Enrolled) -> StreamName {
        StreamName::new("student", c.student.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn initial_state(&self, c: &Enrolled) -> Counts {
        Counts {
            command: Some((c.student, c.course)),
            seen: Seen::default(),
        }
    }

    fn evolve(&self, mut s: Counts, e: &RecordedEvent<Enrolled>) -> Counts {
        if let Some((st, co)) = s.command {
            let same_course = e.data.course == co;
            let same_student = e.data.student == st;
            s.seen.in_course += usize::from(same_course);
            s.seen.of_student += usize::from(same_student);
            s.seen.already |= same_course && same_student;
        }
        s
    }

    fn decide(&self, s: &Counts, c: &Enrolled) -> Result<Vec<Tagged<Enrolled>>, Refused> {
        if s.seen.already {
            return Err(Refused::AlreadyEnrolled);
        }
        if s.seen.in_course >= self.capacity {
            return Err(Refused::CourseFull);
        }
        if s.seen.of_student >= self.per_student {
            return Err(Refused::TooManyCourses);
        }
        Ok(vec![(
            c.clone(),
            vec![course(c.course), student(c.student)],
        )])
    }
}

fn enrolment() -> Enrolment {
    Enrolment {
        capacity: 3,
        per_student: 2,
    }
}

fn enrolled(student: u8, course: u8) -> Enrolled {
    Enrolled { student, course }
}

fn tagged(student: u8, c: u8) -> Tagged<Enrolled> {
    (
        enrolled(student, c),
        vec![course(c), self::student(student)],
    )
}

#[test]
fn given_when_then_applies_the_query_to_the_history() -> Result<(), SpecFailure> {
    let d = enrolment();
    DcbDeciderTest::new(&d)
        .when(enrolled(1, 1))
        .then_expect([tagged(1, 1)])?;
    DcbDeciderTest::new(&d)
        .given([tagged(2, 1), tagged(3, 1), tagged(4, 1)])
        .when(enrolled(1, 1))
        .then_error("full")?;
    // Events of other courses and students are not selected.
    DcbDeciderTest::new(&d)
        .given([tagged(2, 2), tagged(3, 2), tagged(4, 2), tagged(5, 3)])
        .when(enrolled(1, 1))
        .then_expect([tagged(1, 1)])?;
    DcbDeciderTest::new(&d)
        .given([tagged(1, 2), tagged(1, 3)])
        .when(enrolled(1, 1))
        .then_error("too many")?;
    DcbDeciderTest::new(&d)
        .given([tagged(1, 2), tagged(9, 9)])
        .when(enrolled(1, 1))
        .then_read_state(Counts {
            command: Some((1, 1)),
            seen: Seen {
                in_course: 0,
                of_student: 1,
                already: false,
            },
        })?;
    // A tag order different from the decider's is the same set.
    DcbDeciderTest::new(&d)
        .when(enrolled(1, 1))
        .then_expect([(enrolled(1, 1), vec![student(1), course(1)])])?;
    let wrong = DcbDeciderTest::new(&d)
        .when(enrolled(1, 1))
        .then_expect([(enrolled(1, 1), vec![course(1)])]);
    assert!(wrong.is_err());
    Ok(())
}

fn store(memory: &MemoryStore) -> TypedStore<MemoryStore, Enrolled> {
    TypedStore::new(memory.clone(), EventSchema::new(Bytes))
}

#[test]
fn the_handler_decides_on_what_the_query_selects() -> TestResult {
    let memory = MemoryStore::new();
    let handler = DcbHandler::new(enrolment(), store(&memory));
    for s in 1..=3 {
        let done = block_on(handler.handle(&enrolled(s, 1)))?;
        assert_eq!(done.events.len(), 1);
        assert_eq!(done.retries, 0);
        assert_eq!(done.state.seen.in_course, usize::from(s));
        assert_eq!(done.events[0].tags, vec![course(1), student(s)]);
        assert_eq!(done.read_up_to.position().get(), u64::from(s) - 1);
    }
    let full = block_on(handler.handle(&enrolled(4, 1)));
    assert!(matches!(
        full,
        Err(HandleError::Rejected(Refused::CourseFull))
    ));
    // Another course is another boundary.
    block_on(handler.handle(&enrolled(4, 2)))?;
    let again = block_on(handler.handle(&enrolled(4, 2)));
    assert!(matches!(
        again,
        Err(HandleError::Rejected(Refused::AlreadyEnrolled))
    ));
    Ok(())
}

#[test]
fn a_failed_condition_is_retried_with_a_fresh_read_or_returned() -> TestResult {
    let memory = MemoryStore::new();
    // Without retries a decision overtaken by another writer fails with
    // the condition's error.
    let racing = Racing {
        inner: enrolment(),
        memory: memory.clone(),
        left: std::sync::atomic::AtomicUsize::new(1),
    };
    let handler = DcbHandler::new(racing, store(&memory));
    let e = block_on(handler.handle(&enrolled(1, 1)));
    assert!(
        matches!(
            e,
            Err(HandleError::Store(StoreError::ConditionFailed { .. }))
        ),
        "{e:?}"
    );
    assert!(e.as_ref().is_err_and(|e| e.is_conflict()));
    let racing = Racing {
        inner: enrolment(),
        memory: memory.clone(),
        left: std::sync::atomic::AtomicUsize::new(2),
    };
    let policy = RetryPolicy::new(5)?.with_base_delay(Duration::ZERO);
    let handler = DcbHandler::new(racing, store(&memory)).with_conflict_retry(policy);
    let done = block_on(handler.handle(&enrolled(2, 1)))?;
    // Two overtaken decisions, then one on a read that saw both.
    assert_eq!(done.retries, 2);
    assert_eq!(done.events.len(), 1);
    assert_eq!(
        done.read_up_to,
        done.events[0].cursor().min(done.read_up_to)
    );
    Ok(())
}

/// A decider whose `decide` appends a matching event behind the handler's
/// back (a concurrent writer) the first `left` times it runs.
struct Racing {
    inner: Enrolment,
    memory: MemoryStore,
    left: std::sync::atomic::AtomicUsize,
}

impl DcbDecider for Racing {
    type State = Counts;
    type Command = Enrolled;
    type Event = Enrolled;
    type Error = Refused;
    fn query(&self, c: &Enrolled) -> EventQuery {
        self.inner.query(c)
    }
    fn stream(&self, c: &Enrolled) -> StreamName {
        self.inner.stream(c)
    }
    fn initial_state(&self, c: &Enrolled) -> Counts {
        self.inner.initial_state(c)
    }
    fn evolve(&self, s: Counts, e: &RecordedEvent<Enrolled>) -> Counts {
        self.inner.evolve(s, e)
    }
    fn decide(&self, s: &Counts, c: &Enrolled) -> Result<Vec<Tagged<Enrolled>>, Refused> {
        use std::sync::atomic::Ordering;
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Another writer's event carrying this student's tag: it
            // matches the query (a different student in the payload, so
            // the decision does not change).
            let other = StreamName::new("other", "writer").unwrap_or_else(|e| panic!("{e}"));
            let event = NewEvent::new(
                EventType::from_static("Enrolled").unwrap_or_else(|e| panic!("{e}")),
                vec![200, 9],
            )
            .with_codec("bytes")
            .with_tags([course(9), student(c.student)]);
            block_on(eskit_core::store::EventStore::append(
                &self.memory,
                &other,
                ExpectedVersion::Any,
                vec![event],
                AppendOptions::new(),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        self.inner.decide(s, c)
    }
}

#[test]
fn concurrent_handlers_never_oversubscribe() -> TestResult {
    let memory = MemoryStore::new();
    let policy = RetryPolicy::new(1_000)?.with_base_delay(Duration::from_micros(50));
    let handler = Arc::new(
        DcbHandler::new(
            Enrolment {
                capacity: 5,
                per_student: 2,
            },
            store(&memory),
        )
        .with_conflict_retry(policy),
    );
    let threads: Vec<_> = (0..8u8)
        .map(|w| {
            let handler = Arc::clone(&handler);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for s in 0..4u8 {
                    for c in 0..3u8 {
                        let student = w * 10 + s;
                        let course = (c + w) % 3;
                        outcomes.push(block_on(handler.handle(&enrolled(student, course))).is_ok());
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        ok += t
            .join()
            .unwrap_or_else(|_| panic!("a writer panicked"))
            .iter()
            .filter(|o| **o)
            .count();
    }
    assert_eq!(ok, 15, "3 courses of 5 seats");
    let all = block_on(
        eskit_core::dcb::QueryPager::new(
            &memory,
            eskit_core::dcb::QueryOptions::from_start(EventQuery::all(), 1000),
        )
        .collect(),
    )?;
    for c in 0..3u8 {
        let n = all.iter().filter(|e| e.tags.contains(&course(c))).count();
        assert_eq!(n, 5, "course {c}");
    }
    Ok(())
}
