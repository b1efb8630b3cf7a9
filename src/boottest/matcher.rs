//! Deciding pass/fail from guest output. Two sources feed lines: the serial console and
//! the `layerboot.0` virtio-serial port. Each source is split into lines on its own (a
//! line may arrive across many reads); complete lines from both are checked in arrival
//! order. `--fail-on` patterns are checked first on every line (a line that matches both
//! a fail-on and the next expect is a failure), then the next `--expect` pattern; expects
//! must be seen in order, and several may be satisfied by one line.

use std::fmt;

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Console,
    Port,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Console => "serial console",
            Source::Port => "virtio-serial port layerboot.0",
        })
    }
}

/// A line pattern: a plain substring, or with the prefix `re:` a regular expression
/// (Rust `regex` syntax) searched anywhere in the line.
#[derive(Debug, Clone)]
pub enum Pattern {
    Substring(String),
    Regex(regex::Regex),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Self> {
        match s.strip_prefix("re:") {
            Some(re) => Ok(Pattern::Regex(regex::Regex::new(re).with_context(
                || format!("invalid regular expression in pattern '{s}'"),
            )?)),
            None if s.is_empty() => anyhow::bail!("empty pattern"),
            None => Ok(Pattern::Substring(s.to_string())),
        }
    }

    pub fn is_match(&self, line: &str) -> bool {
        match self {
            Pattern::Substring(s) => line.contains(s.as_str()),
            Pattern::Regex(r) => r.is_match(line),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Substring(s) => f.write_str(s),
            Pattern::Regex(r) => write!(f, "re:{}", r.as_str()),
        }
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A `--fail-on` hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub pattern: String,
    pub line: String,
    pub source: Source,
}

#[derive(Debug)]
pub struct Matcher {
    expects: Vec<Pattern>,
    fail_on: Vec<Pattern>,
    seen: usize,
    failure: Option<Failure>,
    partial: [Vec<u8>; 2],
    port_lines: Vec<String>,
}

impl Matcher {
    pub fn new(expects: Vec<Pattern>, fail_on: Vec<Pattern>) -> Self {
        Matcher {
            expects,
            fail_on,
            seen: 0,
            failure: None,
            partial: [Vec::new(), Vec::new()],
            port_lines: Vec::new(),
        }
    }

    /// Feed raw bytes from one source; complete lines are checked at once.
    pub fn feed(&mut self, source: Source, bytes: &[u8]) {
        let idx = source as usize;
        self.partial[idx].extend_from_slice(bytes);
        while let Some(pos) = self.partial[idx].iter().position(|&b| b == b'\n') {
            let rest = self.partial[idx].split_off(pos + 1);
            let line = std::mem::replace(&mut self.partial[idx], rest);
            self.line(source, &line);
        }
    }

    /// End of output: an unterminated last line still counts (a guest may power off
    /// right after printing a marker without a newline).
    pub fn finish(&mut self) {
        for source in [Source::Console, Source::Port] {
            let line = std::mem::take(&mut self.partial[source as usize]);
            if !line.is_empty() {
                self.line(source, &line);
            }
        }
    }

    fn line(&mut self, source: Source, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\n', '\r']);
        if source == Source::Port {
            self.port_lines.push(line.to_string());
        }
        if self.failure.is_some() {
            return;
        }
        if let Some(p) = self.fail_on.iter().find(|p| p.is_match(line)) {
            self.failure = Some(Failure {
                pattern: p.to_string(),
                line: line.to_string(),
                source,
            });
            return;
        }
        while self.seen < self.expects.len() && self.expects[self.seen].is_match(line) {
            log::info!(
                "expected pattern '{}' seen on the {source}",
                self.expects[self.seen]
            );
            self.seen += 1;
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Every expect seen (vacuously true with none).
    pub fn all_seen(&self) -> bool {
        self.seen == self.expects.len()
    }

    pub fn has_expects(&self) -> bool {
        !self.expects.is_empty()
    }

    pub fn next_expected(&self) -> Option<&Pattern> {
        self.expects.get(self.seen)
    }

    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Lines the guest wrote to the virtio-serial port so far.
    pub fn port_lines(&self) -> &[String] {
        &self.port_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(expects: &[&str], fail_on: &[&str]) -> Matcher {
        Matcher::new(
            expects.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
            fail_on.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
        )
    }

    #[test]
    fn table() {
        // (expects, fail_on, feeds, finish?, want all_seen, want failure pattern)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [(Source, &'a str)],
            bool,
            bool,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (
                "in order",
                &["A", "B"],
                &[],
                &[(Source::Console, "A\nB\n")],
                false,
                true,
                None,
            ),
            (
                "out of order is not enough",
                &["A", "B"],
                &[],
                &[(Source::Console, "B\nA\n")],
                false,
                false,
                None,
            ),
            (
                "out of order then in order",
                &["A", "B"],
                &[],
                &[(Source::Console, "B\nA\nxB\n")],
                false,
                true,
                None,
            ),
            (
                "one line satisfies consecutive expects",
                &["A", "B"],
                &[],
                &[(Source::Console, "AB\n")],
                false,
                true,
                None,
            ),
            (
                "line split across reads",
                &["MARKER-42"],
                &[],
                &[
                    (Source::Console, "MAR"),
                    (Source::Console, "KER-"),
                    (Source::Console, "42\r\n"),
                ],
                false,
                true,
                None,
            ),
            (
                "partial line not matched before finish",
                &["END"],
                &[],
                &[(Source::Console, "EN"), (Source::Console, "D")],
                false,
                false,
                None,
            ),
            (
                "partial line matched at finish",
                &["END"],
                &[],
                &[(Source::Console, "END")],
                true,
                true,
                None,
            ),
            (
                "sources mix in arrival order",
                &["A", "B"],
                &[],
                &[(Source::Port, "A\n"), (Source::Console, "B\n")],
                false,
                true,
                None,
            ),
            (
                "sources split independently",
                &["AB"],
                &[],
                &[
                    (Source::Console, "A"),
                    (Source::Port, "B\n"),
                    (Source::Console, "B\n"),
                ],
                false,
                true,
                None,
            ),
            (
                "interleaved partials do not join",
                &["AB"],
                &[],
                &[(Source::Console, "A"), (Source::Port, "B\n")],
                false,
                false,
                None,
            ),
            (
                "fail-on wins over expect on the same line",
                &["boot ok"],
                &["panic"],
                &[(Source::Console, "boot ok but panic\n")],
                false,
                false,
                Some("panic"),
            ),
            (
                "fail-on after pass still recorded",
                &["ok"],
                &["Kernel panic"],
                &[(Source::Console, "ok\nKernel panic - not syncing\n")],
                false,
                true,
                Some("Kernel panic"),
            ),
            (
                "first failure sticks",
                &[],
                &["X", "Y"],
                &[(Source::Port, "Y\nX\n")],
                false,
                true,
                Some("Y"),
            ),
            (
                "regex",
                &["re:^LAYERED-OK [0-9a-f]{4}$"],
                &[],
                &[(Source::Console, "LAYERED-OK beef\n")],
                false,
                true,
                None,
            ),
            (
                "regex anchored does not match mid-line",
                &["re:^OK$"],
                &[],
                &[(Source::Console, "NOT OK\n")],
                false,
                false,
                None,
            ),
        ];
        for (name, expects, fail_on, feeds, finish, want_all, want_fail) in cases {
            let mut mm = m(expects, fail_on);
            for (src, bytes) in *feeds {
                mm.feed(*src, bytes.as_bytes());
            }
            if *finish {
                mm.finish();
            }
            assert_eq!(mm.all_seen(), *want_all, "{name}");
            assert_eq!(
                mm.failure().map(|f| f.pattern.as_str()),
                *want_fail,
                "{name}"
            );
        }
    }

    #[test]
    fn port_lines_and_failure_details() {
        let mut mm = m(&["a"], &["boom"]);
        mm.feed(Source::Port, b"one\r\ntwo boom\n");
        assert_eq!(mm.port_lines(), ["one", "two boom"]);
        let f = mm.failure().unwrap();
        assert_eq!((f.line.as_str(), f.source), ("two boom", Source::Port));
        assert_eq!(mm.next_expected().unwrap().to_string(), "a");
    }

    #[test]
    fn bad_patterns() {
        assert!(Pattern::parse("").is_err());
        assert!(format!("{:#}", Pattern::parse("re:(").unwrap_err()).contains("re:("));
    }
}
