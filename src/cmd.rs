//! The one way layerboot runs other programs: the command line is logged, stdout is
//! captured or passed through, and a failure carries the program's stderr so the user
//! sees *why* mkfs, qemu-img or skopeo failed without rerunning anything.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Render a command as a shell-like line for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let s = a.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            format!("'{}'", s.replace('\'', "'\\''"))
        } else {
            s.into_owned()
        }
    }));
    parts.join(" ")
}

fn check(cmd: &Command, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    bail!(
        "command failed ({}): {}{}{}",
        output.status,
        display(cmd),
        if tail.is_empty() { "" } else { ": " },
        tail.join(" | ")
    )
}

/// Run to completion, capturing stdout and stderr; error if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    log::debug!("running: {}", display(cmd));
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start {}", cmd.get_program().to_string_lossy()))?;
    check(cmd, &output)?;
    Ok(output)
}

/// Run and return stdout as a string.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    String::from_utf8(out.stdout).with_context(|| format!("non-UTF-8 output from {}", display(cmd)))
}

/// Convenience: build and run `program args…`.
pub fn run_args<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(program).args(args))
}

/// Whether `program` is on PATH (for friendly "install X" errors before heavy work).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fail early, naming the Debian package, when a required tool is missing.
pub fn require(program: &str, debian_package: &str) -> Result<()> {
    if have(program) {
        Ok(())
    } else {
        bail!("'{program}' not found on PATH: install the Debian package '{debian_package}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_stderr_and_command() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
        assert!(err.contains("sh -c 'echo boom >&2; exit 3'"), "{err}");
    }

    #[test]
    fn success_returns_stdout() {
        assert_eq!(run_stdout(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(&mut Command::new("layerboot-no-such-program")).unwrap_err();
        assert!(format!("{err:#}").contains("layerboot-no-such-program"));
        assert!(require("layerboot-no-such-program", "pkg").unwrap_err().to_string().contains("'pkg'"));
    }
}
