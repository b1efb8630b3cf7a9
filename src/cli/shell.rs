//! Shell completions and man pages, generated from the same clap tree that parses the
//! command line, so neither can drift from the flags the binary really takes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use super::Cli;
use crate::io::write_atomic;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write a completion script for, on standard output.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `layerboot.1` and one page per subcommand into
    /// (`layerboot-disk.1`, `layerboot-iso-customize.1`, …). Must exist.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
}

/// The completion script for `shell`, as bytes (pure: the caller prints it).
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "layerboot", &mut script);
    script
}

/// Every man page of the command tree as (file name, roff source): the top-level page
/// and one per visible subcommand at every depth, named as git and podman name theirs.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let name = if prefix.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        let subcommands: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        let page = clap_mangen::Man::new(cmd.clone().name(name.clone()));
        let mut roff = Vec::new();
        page.render(&mut roff)
            .with_context(|| format!("rendering the man page of {name}"))?;
        out.push((
            format!("{name}.1"),
            ascii_roff(&String::from_utf8_lossy(&roff)),
        ));
        for sub in subcommands {
            walk(sub, &name, out)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(cmd, "", &mut pages)?;
    Ok(pages)
}

/// Help texts use typographic characters (×, …, –); roff input is ASCII unless a
/// preprocessor converts it, so write them as groff's `\[uXXXX]` escapes, as preconv would.
fn ascii_roff(roff: &str) -> Vec<u8> {
    let mut out = String::with_capacity(roff.len());
    for c in roff.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out.into_bytes()
}

pub fn run_completion(args: CompletionArgs) -> Result<()> {
    let script = completion_script(args.shell);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("writing the completion script to standard output")
}

pub fn run_man(args: ManArgs) -> Result<()> {
    write_man_pages(&args.dir)
}

fn write_man_pages(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("man page directory {} does not exist", dir.display());
    }
    for (file, roff) in man_pages()? {
        write_atomic(dir.join(&file), &roff, 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_subcommand_names() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn bash_completion_offers_every_subcommand() {
        let script = String::from_utf8(completion_script(clap_complete::Shell::Bash)).unwrap();
        assert!(script.contains("_layerboot()"), "no completion function");
        for name in visible_subcommand_names() {
            assert!(script.contains(&name), "bash completion lacks {name}");
        }
        // A flag only one nested subcommand has reaches the script too.
        assert!(script.contains("--pointer-pool"));
    }

    #[test]
    fn every_shell_gets_a_script() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let script = completion_script(shell);
            assert!(
                String::from_utf8_lossy(&script).contains("layerboot"),
                "{shell:?} script does not name the binary"
            );
        }
    }

    #[test]
    fn non_ascii_becomes_groff_escapes() {
        assert_eq!(ascii_roff("a × b…"), b"a \\[u00D7] b\\[u2026]".to_vec());
        assert_eq!(ascii_roff(".TH x"), b".TH x".to_vec());
    }

    #[test]
    fn man_pages_cover_nested_subcommands() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"layerboot.1"));
        for name in visible_subcommand_names() {
            let file = format!("layerboot-{name}.1");
            assert!(
                names.contains(&file.as_str()),
                "no page {file} in {names:?}"
            );
        }
        assert!(names.contains(&"layerboot-iso-customize.1"), "{names:?}");
        let disk = &pages
            .iter()
            .find(|(n, _)| n == "layerboot-disk.1")
            .unwrap()
            .1;
        let disk = String::from_utf8_lossy(disk);
        assert!(
            disk.starts_with(".ie"),
            "not roff: {}",
            &disk[..40.min(disk.len())]
        );
        assert!(
            disk.contains("layerboot\\-disk"),
            "page does not name itself"
        );
    }

    /// The real consumers: bash parses the script, groff renders every page without a
    /// warning (unknown macros, bad escapes).
    #[test]
    fn bash_and_groff_accept_the_output() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("layerboot.bash");
        std::fs::write(&script, completion_script(clap_complete::Shell::Bash)).unwrap();
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        write_man_pages(dir.path()).unwrap();
        for (file, _) in man_pages().unwrap() {
            let out = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(dir.path().join(&file))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff on {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(write_man_pages(&dir.path().join("missing")).is_err());
    }
}
