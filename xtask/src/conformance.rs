//! `cargo xtask conformance --backend <memory|sqlite|postgres|postgres-rls|nats> [-- FILTER]`:
//! runs one backend's conformance test target and ends with its summary line
//! `conformance <backend>: N passed, M failed`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::servers::Servers;
use crate::util::{cargo, describe, flag, out, package_exists, say};

/// Backend name, package and test target of every backend.
pub(crate) const BACKENDS: &[(&str, &str, &str)] = &[
    ("memory", "eskit-testing", "conformance_memory"),
    ("sqlite", "eskit-sqlite", "conformance"),
    ("postgres", "eskit-pg", "conformance"),
    ("postgres-rls", "eskit-pg", "conformance_rls"),
    ("nats", "eskit-nats", "conformance"),
];

/// Whether a backend needs the throw-away servers.
pub(crate) fn needs_servers(backend: &str) -> bool {
    matches!(backend, "postgres" | "postgres-rls" | "nats")
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask conformance --backend <memory|sqlite|postgres|postgres-rls|nats> [-- FILTER]";
    let backend = flag(args, "--backend").ok_or(usage)?;
    let &(_, package, target) = BACKENDS
        .iter()
        .find(|(b, _, _)| *b == backend)
        .ok_or_else(|| format!("unknown backend `{backend}`\n{usage}"))?;
    if !package_exists(package) {
        return Err(format!(
            "backend `{backend}` has no conformance suite yet: package `{package}` is not in \
             the workspace (its test target would be `{package}/tests/{target}.rs`)"
        ));
    }
    let filter: Vec<&String> = args.iter().skip_while(|a| *a != "--").skip(1).collect();

    let servers = if needs_servers(&backend) {
        Some(Servers::provision()?)
    } else {
        None
    };
    let mut cmd = cargo();
    cmd.args(["test", "-p", package, "--test", target, "--"]);
    cmd.args(filter);
    if let Some(s) = &servers {
        s.apply(&mut cmd);
    }
    say(&format!("$ {}", describe(&cmd)));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(&cmd)))?;
    // Echo the suite's lines as they come, holding back the summary so the
    // output ends with it even if cargo prints more afterwards.
    let mut summary = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading test output: {e}"))?;
            if is_summary(&line) {
                summary = Some(line);
            } else {
                out(&line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{}`: {e}", describe(&cmd)))?;
    drop(servers);
    let Some(summary) = summary else {
        return Err(format!(
            "`{}` ended ({status}) without a summary line; it did not build or it crashed",
            describe(&cmd)
        ));
    };
    out(&summary);
    if status.success() {
        Ok(())
    } else {
        Err(format!("conformance suite for `{backend}` failed"))
    }
}

/// `conformance <name>: N passed, M failed`.
fn is_summary(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("conformance ") else {
        return false;
    };
    let Some((name, counts)) = rest.split_once(": ") else {
        return false;
    };
    let mut parts = counts.split(", ");
    let count = |p: Option<&str>, word: &str| {
        p.and_then(|p| p.strip_suffix(word))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    !name.is_empty()
        && !name.contains(' ')
        && count(parts.next(), " passed")
        && count(parts.next(), " failed")
        && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::is_summary;

    #[test]
    fn recognises_summary_lines() {
        assert!(is_summary("conformance memory: 158 passed, 0 failed"));
        assert!(is_summary("conformance postgres: 1 passed, 12 failed"));
        assert!(!is_summary("ok      memory append.round_trip (0 ms)"));
        assert!(!is_summary("conformance memory: 1 passed"));
        assert!(!is_summary("conformance memory: x passed, 0 failed"));
    }
}
