//! The runner: runs several long-running services (subscriptions,
//! processors, anything that takes a shutdown signal), stops them all when
//! one fails, and shuts down gracefully on SIGTERM or ctrl-c with a
//! deadline.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use eskit_core::error::BoxError;
use eskit_core::store::BoxFuture;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// How long services get to finish after the shutdown signal, when not
/// set.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Most services one runner runs.
pub const MAX_SERVICES: usize = 1024;

/// Completes when the runner asks its services to stop. Cloning gives
/// another handle to the same signal; pass [`wait`](Self::wait) as the
/// service's shutdown future (`subscription.run(shutdown.wait())`).
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A future completing when shutdown was requested (at once if it was
    /// already).
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches the signal.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.rx.clone();
        async move {
            // The sender lives as long as the runner; a dropped runner
            // counts as a shutdown.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Why a runner stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// A service failed; the others were stopped.
    Service {
        /// The failed service.
        name: String,
        /// Its error.
        source: BoxError,
    },
    /// A service panicked; the others were stopped.
    Panicked {
        /// The service.
        name: String,
    },
    /// These services had not finished when the shutdown deadline passed;
    /// they were aborted.
    DeadlinePassed {
        /// The services still running.
        pending: Vec<String>,
    },
    /// More than [`MAX_SERVICES`] services, or two with one name.
    InvalidService {
        /// The offending service's name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The signal handlers could not be installed.
    Signal(std::io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service { name, .. } => write!(f, "service {name:?} failed"),
            Self::Panicked { name } => write!(f, "service {name:?} panicked"),
            Self::DeadlinePassed { pending } => write!(
                f,
                "the shutdown deadline passed with {} services running: {}",
                pending.len(),
                pending.join(", ")
            ),
            Self::InvalidService { name, reason } => {
                write!(f, "invalid service {name:?}: {reason}")
            }
            Self::Signal(_) => f.write_str("cannot install the signal handlers"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Service { source, .. } => Some(source.as_ref()),
            Self::Signal(e) => Some(e),
            Self::Panicked { .. } | Self::DeadlinePassed { .. } | Self::InvalidService { .. } => {
                None
            }
        }
    }
}

type Start = Box<dyn FnOnce(Shutdown) -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// Runs services together. Each service is a function that gets a
/// [`Shutdown`] and returns its run future; the runner spawns every one on
/// the tokio runtime, and:
/// - when a service fails (or panics), asks the others to stop and returns
///   that failure;
/// - when the stop future of [`run`](Self::run) completes (or SIGTERM or
///   ctrl-c arrives, with [`run_until_signal`](Self::run_until_signal)),
///   asks every service to stop;
/// - once asked to stop, gives the services the deadline to finish, then
///   aborts the rest ([`RunError::DeadlinePassed`]).
///
/// A service that ends with `Ok` before shutdown is simply done; the others
/// keep running.
///
/// ```
/// use eskit_core::error::BoxError;
/// use eskit_processor::{Runner, Shutdown};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runner = Runner::new()
///     .with_service("ticker", |shutdown: Shutdown| async move {
///         shutdown.wait().await;
///         Ok::<_, BoxError>(())
///     })
///     .with_service("failing", |_| async { Err::<(), BoxError>("boom".into()) });
/// let err = runner.run(std::future::pending()).await.err().ok_or("expected an error")?;
/// assert!(matches!(err, eskit_processor::RunError::Service { ref name, .. } if name == "failing"));
/// # Ok(())
/// # }
/// ```
pub struct Runner {
    services: Vec<(String, Start)>,
    deadline: Duration,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field(
                "services",
                &self.services.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// A runner without services, with [`DEFAULT_SHUTDOWN_DEADLINE`].
    pub fn new() -> Self {
        Self {
            services: Vec::new(),
            deadline: DEFAULT_SHUTDOWN_DEADLINE,
        }
    }

    /// How long services get to finish once asked to stop.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Adds a service named `name`: `start` gets the shutdown signal and
    /// returns the future that runs the service. Names must be unique
    /// (checked when the runner runs).
    #[must_use]
    pub fn with_service<F, Fut, E>(mut self, name: impl Into<String>, start: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.services.push((
            name.into(),
            Box::new(move |shutdown| {
                let fut = start(shutdown);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        ));
        self
    }

    /// Runs every service until all have ended, one fails, or `stop`
    /// completes (then shuts down as described on [`Runner`]).
    ///
    /// # Errors
    /// The first [`RunError`]: a failed or panicked service, the deadline
    /// passed, or an invalid service list.
    ///
    /// # Panics
    /// When polled outside a tokio runtime: the services are tokio tasks.
    ///
    /// # Cancel safety
    /// Dropping the future aborts every service at once.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), RunError> {
        if self.services.len() > MAX_SERVICES {
            let name = self.services[MAX_SERVICES].0.clone();
            return Err(RunError::InvalidService {
                name,
                reason: "more services than MAX_SERVICES",
            });
        }
        for (i, (name, _)) in self.services.iter().enumerate() {
            if self.services[..i].iter().any(|(n, _)| n == name) {
                return Err(RunError::InvalidService {
                    name: name.clone(),
                    reason: "two services have this name",
                });
            }
        }
        let (tx, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut names: Vec<(Id, String)> = Vec::with_capacity(self.services.len());
        for (name, start) in self.services {
            let handle = tasks.spawn(start(Shutdown { rx: rx.clone() }));
            names.push((handle.id(), name));
        }
        let name_of = |names: &[(Id, String)], id: Id| {
            names
                .iter()
                .find(|(i, _)| *i == id)
                .map_or_else(String::new, |(_, n)| n.clone())
        };
        let mut stop = pin!(stop);
        let mut result = Ok(());
        // Phase one: until asked to stop or a failure.
        loop {
            tokio::select! {
                () = &mut stop => break,
                joined = tasks.join_next_with_id() => match joined {
                    None => return Ok(()),
                    Some(Ok((id, Ok(())))) => names.retain(|(i, _)| *i != id),
                    Some(Ok((id, Err(source)))) => {
                        result = Err(RunError::Service { name: name_of(&names, id), source });
                        names.retain(|(i, _)| *i != id);
                        break;
                    }
                    Some(Err(e)) => {
                        let id = e.id();
                        result = Err(RunError::Panicked { name: name_of(&names, id) });
                        names.retain(|(i, _)| *i != id);
                        break;
                    }
                },
            }
        }
        // Phase two: ask everyone to stop and wait, within the deadline.
        let _ = tx.send(true);
        let drain = async {
            while let Some(joined) = tasks.join_next_with_id().await {
                let (id, failure) = match joined {
                    Ok((id, Ok(()))) => (id, None),
                    Ok((id, Err(source))) => (
                        id,
                        Some(RunError::Service {
                            name: name_of(&names, id),
                            source,
                        }),
                    ),
                    Err(e) => (
                        e.id(),
                        Some(RunError::Panicked {
                            name: name_of(&names, e.id()),
                        }),
                    ),
                };
                names.retain(|(i, _)| *i != id);
                if let (Some(f), true) = (failure, result.is_ok()) {
                    result = Err(f);
                }
            }
        };
        if tokio::time::timeout(self.deadline, drain).await.is_err() {
            tasks.abort_all();
            let pending = names.into_iter().map(|(_, n)| n).collect();
            if result.is_ok() {
                result = Err(RunError::DeadlinePassed { pending });
            }
        }
        result
    }

    /// [`run`](Self::run) until SIGTERM or ctrl-c (SIGINT) arrives.
    ///
    /// # Errors
    /// As [`run`](Self::run), and [`RunError::Signal`] when the signal
    /// handlers cannot be installed.
    ///
    /// # Cancel safety
    /// As [`run`](Self::run).
    pub async fn run_until_signal(self) -> Result<(), RunError> {
        let signal = termination().map_err(RunError::Signal)?;
        self.run(signal).await
    }
}

/// A future completing on SIGTERM or ctrl-c. The handlers are installed
/// before it is returned, so a signal arriving right after counts.
#[cfg(unix)]
fn termination() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A future completing on ctrl-c.
#[cfg(not(unix))]
fn termination() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
