//! Everything layerboot prints goes through here, so that no write can panic.
//!
//! `print!`/`println!` panic when stdout is closed or full (exit 101 with a backtrace), and
//! `eprintln!` does the same when stderr is full. Instead:
//!
//! - **stdout** ([`out!`](crate::out), [`outln!`](crate::outln), [`stdout_bytes`]): every
//!   write goes to the locked stdout and is flushed, and its error is returned. A reader
//!   that went away (`EPIPE`: `layerboot iso show X | head -1`) becomes [`StdoutClosed`],
//!   which `main` turns into a quiet exit with status **141** (128 + SIGPIPE), the status a
//!   shell reports for coreutils killed by SIGPIPE, so `set -o pipefail` scripts see the same
//!   thing as with `cat`. Anything else (`ENOSPC` on `/dev/full`, `EIO`) is an ordinary error:
//!   one line, exit status 1. Returning an error (rather than exiting here) lets the command
//!   unwind and remove its temporary files on the way out.
//!   The process keeps ignoring SIGPIPE (Rust's default): restoring the default action
//!   would also kill it when a helper subprocess closes its stdin early.
//! - **stderr** ([`errln!`](crate::errln), [`stderr_text`]): diagnostics are best-effort: a
//!   stderr that cannot be written has nowhere to report its own failure, so errors are
//!   dropped.

use std::fmt;
use std::io::{self, Write};

/// Standard output was closed by its reader (EPIPE). Not an error to report: `main` exits
/// quietly with [`STDOUT_CLOSED_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Exit status after [`StdoutClosed`]: 128 + SIGPIPE.
pub const STDOUT_CLOSED_STATUS: u8 = 141;

/// The error for a failed write to stdout: [`StdoutClosed`] for a reader that went away,
/// else the I/O error named as a write to standard output.
pub fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// For a stream copied to stdout, whose error may come from either side: a broken pipe
/// anywhere in `e`'s chain is [`StdoutClosed`] (a file being read never fails with EPIPE);
/// any other error is returned as it is.
pub fn closed_stdout_or(e: anyhow::Error) -> anyhow::Error {
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        e
    }
}

/// Whether `e` (anywhere in its chain) is a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Write all of `bytes` to stdout and flush.
pub fn stdout_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Write formatted text to stdout and flush; the backend of [`out!`](crate::out).
pub fn stdout_fmt(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Write text to stderr, dropping any error (see the module docs).
pub fn stderr_text(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Write one formatted line to stderr, dropping any error; the backend of
/// [`errln!`](crate::errln).
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `print!` that returns `anyhow::Result<()>` instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout_fmt(::std::format_args!($($arg)*))
    };
}

/// `println!` that returns `anyhow::Result<()>` instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::stdout_bytes(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::output::stdout_fmt(::std::format_args!("{}\n", ::std::format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics (a failed write to stderr is dropped).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stderr_line(::std::format_args!($($arg)*))
    };
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The global `-q`: progress bars and the informational lines printed with
/// [`infoln!`](crate::infoln) are left out. Warnings, errors and the output a command was
/// asked for (files, `--json`, reports) are not. Set once by the CLI before any command runs.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// An informational line on stderr (what was written, notes, next steps), left out under
/// `-q`.
#[macro_export]
macro_rules! infoln {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            $crate::output::stderr_line(::std::format_args!($($arg)*))
        }
    };
}

/// A message on one line, control characters escaped: messages can quote bytes of hostile
/// input (a garbage tar header), which must not reach the terminal raw.
pub fn one_line(msg: &str) -> String {
    msg.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_stdout_closed_and_anything_else_is_an_error_naming_stdout() {
        let closed = stdout_error(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_stdout_closed(&closed));
        let wrapped = closed.context("printing the report");
        assert!(is_stdout_closed(&wrapped));

        let full = stdout_error(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(!is_stdout_closed(&full));
        let msg = format!("{full:#}");
        assert!(msg.starts_with("writing to standard output: "), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
    }
}
