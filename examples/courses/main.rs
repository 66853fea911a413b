//! Course enrolment with a Dynamic Consistency Boundary on SQLite: a course
//! has a capacity and a student takes at most two courses. Neither rule
//! fits one stream (a course's stream cannot see a student's other courses,
//! a student's cannot see the course's seats), so each decision reads the
//! events tagged with its course or its student, across streams, and
//! appends only if none of them changed since it read: `DcbHandler` with an
//! `AppendCondition`. Eight tasks enrol students at once; no course takes
//! more students than it has seats, and no student more than two courses.
//!
//! Run with `cargo run --example courses` (a fresh temporary database).

#![allow(clippy::print_stdout)] // an example talks to its user

use std::collections::BTreeMap;
use std::sync::Arc;

use eskit_codec::JsonCodec;
use eskit_core::{
    dcb::{DcbDecider, DcbHandler, EventQuery, QueryItem, QueryOptions, Tagged},
    error::ValidationError,
    event::{EventType, RecordedEvent, StreamName, Tag},
    handler::{HandleError, RetryPolicy},
    typed::{EventSchema, TypedStore},
};
use eskit_sqlite::{SqliteOptions, SqliteStore};
use serde::{Deserialize, Serialize};

/// What happened. A course's events carry the tag `course:<id>`; an
/// enrolment also carries `student:<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CourseEvent {
    CourseDefined { course: String, capacity: u32 },
    StudentEnrolled { course: String, student: String },
}
eskit_codec::serde_domain_event!(CourseEvent);

/// The most courses one student may take.
const COURSES_PER_STUDENT: u32 = 2;

fn course_tag(course: &str) -> Result<Tag, ValidationError> {
    Tag::new(format!("course:{course}"))
}

fn student_tag(student: &str) -> Result<Tag, ValidationError> {
    Tag::new(format!("student:{student}"))
}

/// A command: define a course, or enrol a student in one. Names, tags and
/// the target stream are checked when the command is built.
enum Command {
    Define {
        course: String,
        capacity: u32,
        tag: Tag,
        stream: StreamName,
    },
    Enrol {
        course: String,
        student: String,
        course_tag: Tag,
        student_tag: Tag,
        stream: StreamName,
    },
}

impl Command {
    fn define(course: &str, capacity: u32) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self::Define {
            course: course.to_owned(),
            capacity,
            tag: course_tag(course)?,
            stream: StreamName::new("course", course)?,
        })
    }

    fn enrol(course: &str, student: &str) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(Self::Enrol {
            course: course.to_owned(),
            student: student.to_owned(),
            course_tag: course_tag(course)?,
            student_tag: student_tag(student)?,
            stream: StreamName::new("student", student)?,
        })
    }
}

/// Why a command is refused.
#[derive(Debug)]
enum Refused {
    AlreadyDefined,
    UnknownCourse,
    CourseFull { capacity: u32 },
    StudentBusy,
    AlreadyEnrolled,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyDefined => f.write_str("the course exists"),
            Self::UnknownCourse => f.write_str("no such course"),
            Self::CourseFull { capacity } => write!(f, "the course is full ({capacity} seats)"),
            Self::StudentBusy => write!(f, "the student takes {COURSES_PER_STUDENT} courses"),
            Self::AlreadyEnrolled => f.write_str("the student is enrolled already"),
        }
    }
}

impl std::error::Error for Refused {}

/// What a decision knows: the command's course and student, and what the
/// selected events say about them.
#[derive(Debug, Default)]
struct Seats {
    course: String,
    student: String,
    capacity: Option<u32>,
    taken: u32,
    students_courses: u32,
    already: bool,
}

struct Enrolment {
    enrolled: EventType,
}

impl DcbDecider for Enrolment {
    type State = Seats;
    type Command = Command;
    type Event = CourseEvent;
    type Error = Refused;

    /// Everything about the course (its definition, its enrolments), and
    /// the student's enrolments.
    fn query(&self, cmd: &Command) -> EventQuery {
        match cmd {
            Command::Define { tag, .. } => QueryItem::new().with_tags([tag.clone()]).into(),
            Command::Enrol {
                course_tag,
                student_tag,
                ..
            } => EventQuery::new()
                .with_item(QueryItem::new().with_tags([course_tag.clone()]))
                .with_item(
                    QueryItem::new()
                        .with_event_types([self.enrolled.clone()])
                        .with_tags([student_tag.clone()]),
                ),
        }
    }

    fn stream(&self, cmd: &Command) -> StreamName {
        match cmd {
            Command::Define { stream, .. } | Command::Enrol { stream, .. } => stream.clone(),
        }
    }

    fn initial_state(&self, cmd: &Command) -> Seats {
        match cmd {
            Command::Define { course, .. } => Seats {
                course: course.clone(),
                ..Seats::default()
            },
            Command::Enrol {
                course, student, ..
            } => Seats {
                course: course.clone(),
                student: student.clone(),
                ..Seats::default()
            },
        }
    }

    fn evolve(&self, mut s: Seats, e: &RecordedEvent<CourseEvent>) -> Seats {
        match &e.data {
            CourseEvent::CourseDefined { course, capacity } if *course == s.course => {
                s.capacity = Some(*capacity);
            }
            CourseEvent::StudentEnrolled { course, student } => {
                let (this_course, this_student) = (*course == s.course, *student == s.student);
                s.taken += u32::from(this_course);
                s.students_courses += u32::from(this_student);
                s.already |= this_course && this_student;
            }
            CourseEvent::CourseDefined { .. } => {}
        }
        s
    }

    fn decide(&self, s: &Seats, cmd: &Command) -> Result<Vec<Tagged<CourseEvent>>, Refused> {
        match cmd {
            Command::Define {
                course,
                capacity,
                tag,
                ..
            } => {
                if s.capacity.is_some() {
                    return Err(Refused::AlreadyDefined);
                }
                let e = CourseEvent::CourseDefined {
                    course: course.clone(),
                    capacity: *capacity,
                };
                Ok(vec![(e, vec![tag.clone()])])
            }
            Command::Enrol {
                course,
                student,
                course_tag,
                student_tag,
                ..
            } => {
                let capacity = s.capacity.ok_or(Refused::UnknownCourse)?;
                if s.already {
                    return Err(Refused::AlreadyEnrolled);
                }
                if s.taken >= capacity {
                    return Err(Refused::CourseFull { capacity });
                }
                if s.students_courses >= COURSES_PER_STUDENT {
                    return Err(Refused::StudentBusy);
                }
                let e = CourseEvent::StudentEnrolled {
                    course: course.clone(),
                    student: student.clone(),
                };
                Ok(vec![(e, vec![course_tag.clone(), student_tag.clone()])])
            }
        }
    }
}

const COURSES: [(&str, u32); 3] = [("algebra", 4), ("biology", 3), ("chemistry", 5)];
const WRITERS: usize = 8;
const STUDENTS_PER_WRITER: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("eskit-courses-{}.db", std::process::id()));
    let backend = SqliteStore::connect(SqliteOptions::file(&path)).await?;
    let store = TypedStore::new(backend.clone(), EventSchema::new(JsonCodec));
    println!("courses on {}", path.display());

    let decider = Enrolment {
        enrolled: EventType::new("StudentEnrolled")?,
    };
    // A failed condition means another decision got in first: read again
    // and decide on what it wrote.
    let handler = Arc::new(
        DcbHandler::new(decider, store.clone()).with_conflict_retry(RetryPolicy::new(200)?),
    );
    for (course, capacity) in COURSES {
        handler.handle(&Command::define(course, capacity)?).await?;
        println!("{course}: {capacity} seats");
    }

    // Sixteen students, each trying every course (in a different order per
    // writer): 48 requests for 12 seats, at most 2 courses per student.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let mut log = Vec::new();
                for s in 0..STUDENTS_PER_WRITER {
                    let student = format!("s{:02}", w * STUDENTS_PER_WRITER + s);
                    for k in 0..COURSES.len() {
                        let (course, _) = COURSES[(k + w) % COURSES.len()];
                        let cmd = Command::enrol(course, &student).map_err(|e| e.to_string())?;
                        let line = match handler.handle(&cmd).await {
                            Ok(done) => format!(
                                "{student} enrolled in {course} (seat {} taken, retries: {})",
                                done.state.taken, done.retries
                            ),
                            Err(HandleError::Rejected(why)) => {
                                format!("{student} not enrolled in {course}: {why}")
                            }
                            Err(e) => return Err(e.to_string()),
                        };
                        log.push(line);
                    }
                }
                Ok::<_, String>(log)
            })
        })
        .collect();
    for task in tasks {
        for line in task.await?? {
            println!("{line}");
        }
    }

    // Read every enrolment back and check the rules held.
    let enrolled = QueryItem::new().with_event_types([EventType::new("StudentEnrolled")?]);
    let page = store
        .query(QueryOptions::from_start(enrolled.into(), 1000))
        .await?;
    let mut per_course: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_student: BTreeMap<String, u32> = BTreeMap::new();
    for e in &page.events {
        if let CourseEvent::StudentEnrolled { course, student } = &e.data {
            *per_course.entry(course.clone()).or_default() += 1;
            *per_student.entry(student.clone()).or_default() += 1;
        }
    }
    for (course, capacity) in COURSES {
        let n = per_course.get(course).copied().unwrap_or(0);
        println!("{course}: {n} of {capacity} seats taken");
        if n > capacity {
            return Err(format!("{course} is oversubscribed").into());
        }
    }
    if let Some((student, n)) = per_student.iter().find(|(_, n)| **n > COURSES_PER_STUDENT) {
        return Err(format!("{student} takes {n} courses").into());
    }
    println!(
        "{} enrolments, no course over capacity, no student over {COURSES_PER_STUDENT} courses",
        page.events.len()
    );

    drop(handler);
    drop(store);
    backend.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
