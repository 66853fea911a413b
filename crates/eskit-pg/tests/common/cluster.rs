//! A PostgreSQL cluster of a test's own: `initdb` in a temporary
//! directory, a free port, extra server settings, and a stop that crashes
//! it (`pg_ctl stop -m immediate`) and a start on the same data and port.
//!
//! The server binaries come from `ESKIT_PG_BIN` (which `cargo xtask test`
//! sets to the ones it uses), else the newest `/usr/lib/postgresql/*/bin`.
//! As root, the cluster belongs to the `postgres` user (PostgreSQL refuses
//! to run as root). A small `sh` watchdog holds a pipe from the test
//! process: when the test ends in any way, even by SIGKILL, the pipe
//! closes and the watchdog stops the server and removes the directory.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The variable naming the directory of the server binaries.
pub const BIN_VAR: &str = "ESKIT_PG_BIN";

/// Seconds `pg_ctl` waits for a start (crash recovery included) or a stop.
const PG_CTL_WAIT_SECS: &str = "120";

/// How long dropping a cluster waits for its watchdog to clean up.
const CLEANUP_WAIT: Duration = Duration::from_secs(30);

/// The most lines of the server log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// A throw-away PostgreSQL cluster; dropping it stops the server and
/// removes its data.
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    root: bool,
    watchdog: Child,
    pipe: Option<ChildStdin>,
}

impl std::fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCluster")
            .field("port", &self.port)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// The directory of the server binaries, or how to get them.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_VAR).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
        return Err(format!(
            "{BIN_VAR} is {} but holds no postgres and pg_ctl",
            dir.display()
        ));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    // Newest major version first (numeric, so 9 sorts below 15).
    candidates.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates
        .into_iter()
        .rev()
        .find(|d| d.join("postgres").exists() && d.join("pg_ctl").exists())
        .ok_or_else(|| {
            format!(
                "this test starts a PostgreSQL cluster of its own and found no server binaries: \
                 install them (Debian: `apt-get install postgresql-15`) or set {BIN_VAR} to the \
                 directory holding initdb, pg_ctl and postgres"
            )
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

/// A setting's name and value must stay plain: they go into
/// `postgresql.conf`.
fn check_setting(name: &str, value: &str) -> Result<(), String> {
    let plain_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    let plain_value = value
        .bytes()
        .all(|b| (b.is_ascii_graphic() && b != b'\'' && b != b'\\') || b == b' ');
    if plain_name && plain_value {
        Ok(())
    } else {
        Err(format!("unsupported server setting {name:?} = {value:?}"))
    }
}

impl PrivateCluster {
    /// Creates a cluster, configures it with `settings` (name, value) on
    /// top of a loopback-only listener on a free port, and starts it.
    ///
    /// # Errors
    /// No server binaries, a failing `initdb` or start (with the log's tail).
    pub fn start(settings: &[(&str, &str)]) -> Result<Self, String> {
        for (name, value) in settings {
            check_setting(name, value)?;
        }
        let bin = bin_dir()?;
        let root = is_root();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "eskit-pg-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        let port = free_port()?;
        // The watchdog first, so that whatever fails below is cleaned up.
        let watchdog = Self::watchdog(&bin, &dir, &data, root)?;
        let cluster = Self {
            bin,
            dir,
            data,
            log,
            port,
            root,
            watchdog: watchdog.0,
            pipe: Some(watchdog.1),
        };
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(
                    "running as root, the cluster must belong to a `postgres` user, and chown to \
                     it failed (is there one? Debian's postgresql package creates it)"
                        .to_owned(),
                );
            }
        }
        let initdb_log = cluster.dir.join("initdb.log");
        let out = cluster
            .as_postgres(&cluster.bin.join("initdb"))
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::write(&initdb_log, &out.stdout);
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.configure(settings)?;
        cluster.start_again()?;
        Ok(cluster)
    }

    /// `sh` waiting on a pipe; when it closes: an immediate stop and the
    /// directory removed. Its own process group keeps a Ctrl-C meant for
    /// the test from killing it before it cleaned up.
    fn watchdog(
        bin: &Path,
        dir: &Path,
        data: &Path,
        root: bool,
    ) -> Result<(Child, ChildStdin), String> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("read _ignored; \"$@\" >/dev/null 2>&1; rm -rf -- \"$ESKIT_CLUSTER_DIR\"")
            .arg("sh");
        if root {
            cmd.args([
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]);
        }
        cmd.arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["stop", "-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS])
            .env("ESKIT_CLUSTER_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the cluster's watchdog shell: {e}"))?;
        match child.stdin.take() {
            Some(pipe) => Ok((child, pipe)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("the watchdog shell has no stdin pipe".to_owned())
            }
        }
    }

    /// A command for `program`, run as the `postgres` user when we are root.
    fn as_postgres(&self, program: &Path) -> Command {
        if self.root {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn configure(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let mut conf = format!(
            "\n# A test's private cluster.\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = 100\nlogging_collector = off\n",
            self.port,
            self.dir.display().to_string().replace('\'', "''"),
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{value}'\n"));
        }
        let path = self.data.join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| format!("cannot write {path:?}: {e}"))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args)
            .args(["-w", "-t", PG_CTL_WAIT_SECS])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {} failed: {}{}\nserver log (tail):\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ))
        }
    }

    /// Starts the server on the same data directory and port, and returns
    /// once it accepts queries (after crash recovery).
    ///
    /// # Errors
    /// `pg_ctl start` failing or timing out, with the log's tail.
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl(&["start"])
    }

    /// Crashes the server: `pg_ctl stop -m immediate` (every process quits
    /// at once, without a checkpoint; the next start runs crash recovery).
    ///
    /// # Errors
    /// `pg_ctl stop` failing, with the log's tail.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "immediate"])
    }

    /// The URL of the server (superuser `postgres`, database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file the server logs to (across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server log so far.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn log(&self) -> Result<String, String> {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("cannot read the server log: {e}"))
    }

    fn log_tail(&self) -> String {
        let log = self.log().unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
        // Closing the pipe lets the watchdog remove the directory.
        drop(self.pipe.take());
        let deadline = Instant::now() + CLEANUP_WAIT;
        loop {
            match self.watchdog.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
