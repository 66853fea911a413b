//! `cargo xtask bench [--backend B] [--workload W] [--json FILE]`: runs the
//! benchmark targets of the selected backends (all present ones by default,
//! plus the codec benchmarks), collects their JSON lines into FILE
//! (default `target/bench.json`) and prints one combined markdown table.
//!
//! Protocol shared by every bench target: when `ESKIT_BENCH_JSON` names a
//! file, the target appends one JSON object per result row to it, with at
//! least `backend`, `workload`, `impl` (`eskit` or `baseline`),
//! `events_per_sec`, `p50_us`, `p99_us` and `ratio`. `ESKIT_BENCH_WORKLOAD`
//! carries the `--workload` filter.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::conformance::needs_servers;
use crate::servers::Servers;
use crate::util::{cargo, flag, out, package_dir, run_cmd, say};

/// Backend name, package and bench target, in table order.
const TARGETS: &[(&str, &str, &str)] = &[
    ("memory", "eskit-testing", "memory"),
    ("sqlite", "eskit-sqlite", "sqlite"),
    ("postgres", "eskit-pg", "postgres"),
    ("nats", "eskit-nats", "nats"),
    ("codec", "eskit-codec", "codec"),
    ("subscription", "eskit-processor", "subscription"),
];

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask bench [--backend memory|sqlite|postgres|nats|codec|subscription] [--workload W] [--json FILE]";
    if args.iter().any(|a| a == "-h" || a == "--help") {
        out(usage);
        return Ok(());
    }
    let backend = flag(args, "--backend");
    let workload = flag(args, "--workload");
    let json = match flag(args, "--json") {
        Some(f) => {
            let p = PathBuf::from(f);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("current directory: {e}"))?
                    .join(p)
            }
        }
        None => crate::util::target_dir().join("bench.json"),
    };

    let selected: Vec<&(&str, &str, &str)> = match &backend {
        Some(b) => vec![
            TARGETS
                .iter()
                .find(|(name, _, _)| name == b)
                .ok_or_else(|| format!("unknown backend `{b}`\n{usage}"))?,
        ],
        None => TARGETS.iter().collect(),
    };
    let mut runnable = Vec::new();
    for &&(name, package, bench) in &selected {
        match package_dir(package) {
            Some(dir) if dir.join("benches").join(format!("{bench}.rs")).exists() => {
                runnable.push((name, package, bench));
            }
            found => {
                let why = if found.is_some() {
                    format!("package `{package}` has no `benches/{bench}.rs` yet")
                } else {
                    format!("package `{package}` is not in the workspace yet")
                };
                if backend.is_some() {
                    return Err(format!("cannot benchmark `{name}`: {why}"));
                }
                say(&format!("bench: skipping {name}: {why}"));
            }
        }
    }
    if runnable.is_empty() {
        return Err("no benchmark target to run".into());
    }

    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(&json, "").map_err(|e| format!("writing {}: {e}", json.display()))?;
    let servers = if runnable.iter().any(|(n, _, _)| needs_servers(n)) {
        Some(Servers::provision()?)
    } else {
        None
    };
    for (_, package, bench) in &runnable {
        let mut cmd = cargo();
        // All features, so the codec bench measures every codec.
        cmd.args(["bench", "-p", package, "--all-features", "--bench", bench])
            .env("ESKIT_BENCH_JSON", &json);
        if let Some(w) = &workload {
            cmd.env("ESKIT_BENCH_WORKLOAD", w);
        }
        if let Some(s) = &servers {
            s.apply(&mut cmd);
        }
        run_cmd(&mut cmd)?;
    }
    drop(servers);

    let text =
        std::fs::read_to_string(&json).map_err(|e| format!("reading {}: {e}", json.display()))?;
    let rows: Vec<BTreeMap<String, Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_object)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", json.display()))?;
    out(&table(&rows));
    say(&format!(
        "bench: {} rows written to {}",
        rows.len(),
        json.display()
    ));
    Ok(())
}

/// A JSON value of a flat object; nested values are kept as raw text.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Num(f64),
    Null,
    Raw(String),
}

impl Value {
    fn show(&self) -> String {
        match self {
            Self::Str(s) | Self::Raw(s) => s.clone(),
            Self::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{n:.0}"),
            Self::Num(n) if n.abs() >= 100.0 => format!("{n:.0}"),
            Self::Num(n) => format!("{n:.2}"),
            Self::Null => "-".to_owned(),
        }
    }
}

fn table(rows: &[BTreeMap<String, Value>]) -> String {
    let mut t = String::from(
        "| backend | workload | impl | events/s | p50 µs | p99 µs | ratio | notes |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    let get = |r: &BTreeMap<String, Value>, k: &str| r.get(k).map_or("-".to_owned(), Value::show);
    for r in rows {
        let workload = match r.get("name") {
            Some(Value::Str(n)) => format!("{} {n}", get(r, "workload")),
            _ => get(r, "workload"),
        };
        let notes = match (r.get("conflict_rate"), r.get("ns_per_event")) {
            (Some(Value::Num(c)), _) => format!("conflict rate {:.1}%", c * 100.0),
            // Codec rows measure time per event against the direct library call.
            (_, Some(Value::Num(ns))) => format!(
                "{ns:.0} ns/event, direct call {} ns/event",
                get(r, "baseline_ns_per_event")
            ),
            _ => String::new(),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            get(r, "backend"),
            workload,
            get(r, "impl"),
            get(r, "events_per_sec"),
            get(r, "p50_us"),
            get(r, "p99_us"),
            get(r, "ratio"),
            notes
        ));
    }
    t
}

/// Parses one flat JSON object (the bench protocol's line format).
fn parse_object(line: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut p = Parser {
        s: line.trim().as_bytes(),
        i: 0,
    };
    let mut map = BTreeMap::new();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        return Ok(map);
    }
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let value = p.value()?;
        map.insert(key, value);
        p.ws();
        match p.next() {
            Some(b',') => {}
            Some(b'}') => return Ok(map),
            _ => return Err(format!("malformed JSON line: {line}")),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i - 1))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => match self.next() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'u') => {
                        let hex = self
                            .s
                            .get(self.i..self.i + 4)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .ok_or("bad \\u escape")?;
                        self.i += 4;
                        let c = char::from_u32(hex).unwrap_or('\u{fffd}');
                        out.extend(c.to_string().bytes());
                    }
                    Some(c) => out.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'{' | b'[') => {
                let start = self.i;
                let mut depth = 0i32;
                let mut in_str = false;
                while let Some(c) = self.next() {
                    match (in_str, c) {
                        (true, b'\\') => self.i += 1,
                        (true, b'"') => in_str = false,
                        (false, b'"') => in_str = true,
                        (false, b'{' | b'[') => depth += 1,
                        (false, b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                let raw = &self.s[start..self.i];
                                return Ok(Value::Raw(String::from_utf8_lossy(raw).into_owned()));
                            }
                        }
                        _ => {}
                    }
                }
                Err("unterminated nested value".into())
            }
            _ => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, b',' | b'}') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                let word =
                    std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                match word {
                    "null" => Ok(Value::Null),
                    "true" | "false" => Ok(Value::Raw(word.to_owned())),
                    n => n
                        .parse::<f64>()
                        .map(Value::Num)
                        .map_err(|_| format!("bad JSON value `{n}`")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_protocol_lines() -> Result<(), String> {
        let row = parse_object(
            r#"{"backend":"memory","workload":"W1","impl":"eskit","events_per_sec":625491.871,"p50_us":0.41,"ratio":null,"x":{"a":[1,"}"]},"ok":true,"s":"a\"b\u00e9"}"#,
        )?;
        assert_eq!(row.get("backend"), Some(&Value::Str("memory".into())));
        assert_eq!(row.get("events_per_sec"), Some(&Value::Num(625491.871)));
        assert_eq!(row.get("ratio"), Some(&Value::Null));
        assert_eq!(row.get("x"), Some(&Value::Raw(r#"{"a":[1,"}"]}"#.into())));
        assert_eq!(row.get("s"), Some(&Value::Str("a\"bé".into())));
        assert!(parse_object("{\"a\":}").is_err());
        assert!(table(&[row]).contains("| memory | W1 | eskit | 625492 | 0.41 |"));
        Ok(())
    }
}
