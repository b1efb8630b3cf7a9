//! The bad-input table (docs/bad-input.md), run: every row's command against the real binary, in a
//! fresh directory of bad files, asserting its exit status, that stderr contains the
//! quoted text as one `error:` line, that stdout is empty and that no file appeared.
//! That page is the only copy of the rows, so the table cannot drift from the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGE: &str = "quay.io/acme/rhcos-layered@sha256:5e9c4b1d2f3a7e6b8c0d9f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug)]
struct Row {
    line: usize,
    command: String,
    says: String,
    exit: i32,
}

/// The text between a pair of backticks that make up a whole cell.
fn code_cell(cell: &str) -> Option<&str> {
    cell.trim().strip_prefix('`')?.strip_suffix('`')
}

/// Rows of the table between the begin/end markers. Pure, so its own test can feed it
/// broken tables.
fn parse_table(readme: &str) -> Result<Vec<Row>, String> {
    let begin = "<!-- bad-input-table:begin -->";
    let end = "<!-- bad-input-table:end -->";
    let start = readme
        .lines()
        .position(|l| l.trim() == begin)
        .ok_or("no bad-input-table:begin marker")?;
    let mut rows = Vec::new();
    for (i, l) in readme.lines().enumerate().skip(start + 1) {
        let l = l.trim();
        if l == end {
            return if rows.is_empty() {
                Err("the table has no rows".into())
            } else {
                Ok(rows)
            };
        }
        // header and separator
        if l.starts_with("| command") || l.starts_with("|---") {
            continue;
        }
        let line = i + 1;
        let cells: Vec<&str> = l
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .ok_or(format!("docs/bad-input.md line {line}: not a table row"))?
            .split(" | ")
            .collect();
        let [command, says, exit] = cells[..] else {
            return Err(format!(
                "docs/bad-input.md line {line}: expected 3 cells, got {}",
                cells.len()
            ));
        };
        let command = code_cell(command)
            .filter(|c| c.starts_with("layerboot"))
            .ok_or(format!(
                "docs/bad-input.md line {line}: the command must be `layerboot …`"
            ))?;
        let says = code_cell(says).filter(|s| !s.is_empty()).ok_or(format!(
            "docs/bad-input.md line {line}: the message must be `…`"
        ))?;
        let exit = exit.trim().parse().map_err(|_| {
            format!("docs/bad-input.md line {line}: exit status '{exit}' is not a number")
        })?;
        rows.push(Row {
            line,
            command: command.to_string(),
            says: says.to_string(),
            exit,
        });
    }
    Err("no bad-input-table:end marker".into())
}

/// The bad files every row can name (listed above the table in docs/bad-input.md).
fn make_inputs(dir: &Path) {
    let w = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).unwrap();
    w("bad-auth.json", b"not json\n");
    w(
        "bad-install-config.yaml",
        b"apiVersion: v1\nmetadata: [unclosed\n",
    );
    w("bad.ign", b"{\"ignition\":\n");
    w("not-a-cert.pem", b"hello\n");
    // Deterministic "random" bytes: no CD001 where an ISO has it.
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w("not-an-iso.bin", &noise);
    // The fuzz seeds are small real-shaped live ISOs from sector 16 on.
    let iso = |seed: &str| {
        let mut v = vec![0u8; 32768];
        v.extend(std::fs::read(repo().join("fuzz/corpus/iso9660").join(seed)).unwrap());
        v
    };
    let live = iso("live-pristine-rr-joliet");
    w("live.iso", &live);
    w("truncated.iso", &live[..50_000]);
    w("customized.iso", &iso("live-customized"));
    std::fs::create_dir(dir.join("empty-dir")).unwrap();
    std::fs::create_dir(dir.join("layout-no-index")).unwrap();
    w(
        "layout-no-index/oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
}

fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// Run one row; `Err` says how it differs from the table.
fn run_row(row: &Row) -> Result<(), String> {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    let home = work.path().join("home");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    make_inputs(&dir);
    let before = listing(&dir);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_layerboot"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // bash, so the row is exactly what a reader pastes into a shell.
    let out = Command::new("bash")
        .arg("-c")
        .arg(&row.command)
        .current_dir(&dir)
        .env("PATH", path)
        .env("IMAGE", IMAGE)
        .env("HOME", &home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(row.exit) {
        problems.push(format!(
            "exit status {:?}, the table says {}",
            out.status.code(),
            row.exit
        ));
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    if errors.len() != 1 || !errors[0].contains(&row.says) {
        problems.push(format!(
            "stderr should have one error line containing {:?}",
            row.says
        ));
    }
    if stderr.contains("panicked") {
        problems.push("it panicked".into());
    }
    if !out.stdout.is_empty() {
        problems.push(format!(
            "stdout is not empty: {:?}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let after = listing(&dir);
    let new: Vec<_> = after.difference(&before).collect();
    if !new.is_empty() {
        problems.push(format!("it left files behind: {new:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "docs/bad-input.md line {}: `{}`: {}\n  stderr: {}",
            row.line,
            row.command,
            problems.join("; "),
            stderr.trim_end().replace('\n', "\n          ")
        ))
    }
}

#[test]
fn every_row_of_the_readme_table_holds() {
    let readme = std::fs::read_to_string(repo().join("docs/bad-input.md")).unwrap();
    let rows = parse_table(&readme).unwrap_or_else(|e| panic!("docs/bad-input.md: {e}"));
    assert!(
        rows.len() >= 20,
        "the table should cover the ~20 most important bad inputs, has {}",
        rows.len()
    );
    let failures: Vec<String> = rows.iter().filter_map(|r| run_row(r).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows differ from the binary:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_parser_refuses_broken_tables() {
    let t = |body: &str| {
        format!("x\n<!-- bad-input-table:begin -->\n| command | says | exit |\n|---|---|---|\n{body}<!-- bad-input-table:end -->\n")
    };
    let ok = parse_table(&t("| `layerboot a b` | `no such thing` | 1 |\n")).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].command, "layerboot a b");
    assert_eq!(ok[0].says, "no such thing");
    assert_eq!(ok[0].exit, 1);
    assert_eq!(ok[0].line, 5);
    for (body, want) in [
        ("", "no rows"),
        ("| `layerboot a` | `x` |\n", "expected 3 cells"),
        ("| `layerboot a` | `x` | one |\n", "not a number"),
        ("| `rm -rf /` | `x` | 1 |\n", "must be `layerboot"),
        ("| `layerboot a` | x | 1 |\n", "message must be"),
        ("layerboot a\n", "not a table row"),
    ] {
        let e = parse_table(&t(body)).unwrap_err();
        assert!(e.contains(want), "{body:?}: {e}");
    }
    assert!(parse_table("no table")
        .unwrap_err()
        .contains("begin marker"));
}

/// A row that does not hold is reported (the test can fail): wrong status, wrong text.
#[test]
fn a_row_that_does_not_hold_is_reported() {
    let row = |says: &str, exit| Row {
        line: 0,
        command: "layerboot inspect fedora".into(),
        says: says.into(),
        exit,
    };
    assert!(run_row(&row("is a short name", 1)).is_ok());
    let e = run_row(&row("is a short name", 2)).unwrap_err();
    assert!(e.contains("exit status Some(1), the table says 2"), "{e}");
    let e = run_row(&row("something else", 1)).unwrap_err();
    assert!(e.contains("one error line containing"), "{e}");
}
