//! Helpers shared by the integration tests that run the built `layerboot` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn layerboot(args: &[&str]) -> Run {
    layerboot_env(args, &[])
}

/// Run with an empty HOME and no auth-related variables, so the developer's own
/// credentials never leak into a test.
pub fn layerboot_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerboot"));
    c.args(args)
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("running layerboot");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// A failure reported as exactly one `error: …` line that contains every `needles`.
    #[track_caller]
    pub fn one_line_error(&self, needles: &[&str]) -> &Self {
        assert_ne!(
            self.code,
            Some(0),
            "expected failure\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(self.code.is_some(), "killed by a signal: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        for n in needles {
            assert!(
                lines[0].contains(n),
                "error does not name '{n}': {}",
                lines[0]
            );
        }
        assert!(self.stdout.is_empty(), "stdout on failure: {}", self.stdout);
        self
    }

    #[track_caller]
    pub fn never_shows(&self, secrets: &[&str]) -> &Self {
        for s in secrets {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "secret '{s}' in output:\n{}\n{}",
                self.stdout,
                self.stderr
            );
        }
        self
    }
}

/// Every entry under `dir` (recursively), relative, sorted: to prove nothing was left.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}
