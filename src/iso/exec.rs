//! Apply a [`Plan`]: in place (only the planned byte ranges are written), to a new file
//! (streamed, renamed into place on success), or to stdout. Memory stays flat in the ISO
//! size: unchanged ranges are copied with `io::copy`, which the kernel does for file to
//! file (copy_file_range) and file to pipe (splice/sendfile).

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::plan::Plan;
use crate::io::AtomicFile;

/// Where the result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    InPlace,
    File(&'a Path),
    Stdout,
}

impl<'a> Target<'a> {
    /// `None` → in place, `-` → stdout, else a file.
    pub fn from_output(output: Option<&'a Path>) -> Self {
        match output {
            None => Target::InPlace,
            Some(p) if p == Path::new("-") => Target::Stdout,
            Some(p) => Target::File(p),
        }
    }
}

/// Copy `input` to `out`, substituting the planned writes.
pub fn stream_with_plan(input: &mut File, plan: &Plan, out: &mut impl Write) -> Result<u64> {
    input.seek(SeekFrom::Start(0)).context("seeking input")?;
    let mut pos = 0u64;
    for w in &plan.writes {
        let gap = w.offset - pos;
        let n = io::copy(&mut Read::by_ref(input).take(gap), out).context("copying the ISO")?;
        if n != gap {
            bail!("the ISO ended early while copying (at offset {})", pos + n);
        }
        out.write_all(&w.bytes).with_context(|| format!("writing the {}", w.what))?;
        input.seek(SeekFrom::Current(w.length as i64)).context("seeking input")?;
        pos = w.offset + w.length;
    }
    let rest = io::copy(input, out).context("copying the ISO")?;
    out.flush().context("flushing output")?;
    Ok(pos + rest)
}

/// Apply `plan` to the ISO at `input`.
pub fn apply(input: &Path, plan: &Plan, target: Target) -> Result<()> {
    match target {
        Target::InPlace => {
            let mut f = crate::io::open_rw(input)?;
            for w in &plan.writes {
                f.seek(SeekFrom::Start(w.offset)).with_context(|| format!("seeking in {}", input.display()))?;
                f.write_all(&w.bytes).with_context(|| format!("writing the {} of {}", w.what, input.display()))?;
            }
            f.sync_all().with_context(|| format!("syncing {}", input.display()))?;
        }
        Target::File(dest) => {
            let mut src = File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let mut out = AtomicFile::create(dest, 0o644)?;
            stream_with_plan(&mut src, plan, out.file()).with_context(|| format!("writing {}", dest.display()))?;
            out.commit()?;
        }
        Target::Stdout => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an ISO image to a terminal: redirect stdout or use -o FILE");
            }
            let mut src = File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let mut lock = stdout.lock();
            stream_with_plan(&mut src, plan, &mut lock).context("writing the ISO to stdout")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso::plan::Write as PlanWrite;

    #[test]
    fn stream_substitutes_exactly_the_planned_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&input, &data).unwrap();
        let plan = Plan {
            writes: vec![
                PlanWrite { what: "a".into(), offset: 0, bytes: vec![1; 3], length: 3 },
                PlanWrite { what: "b".into(), offset: 5000, bytes: vec![2; 10], length: 10 },
                PlanWrite { what: "c".into(), offset: 9990, bytes: vec![3; 10], length: 10 },
            ],
            notes: vec![],
        };
        let mut want = data.clone();
        want[..3].fill(1);
        want[5000..5010].fill(2);
        want[9990..].fill(3);

        let out = dir.path().join("out");
        apply(&input, &plan, Target::File(&out)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want);
        assert_eq!(std::fs::read(&input).unwrap(), data, "input untouched by -o");

        let mut buf = Vec::new();
        stream_with_plan(&mut File::open(&input).unwrap(), &plan, &mut buf).unwrap();
        assert_eq!(buf, want);

        apply(&input, &plan, Target::InPlace).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), want);
    }

    #[test]
    fn targets_from_output() {
        assert_eq!(Target::from_output(None), Target::InPlace);
        assert_eq!(Target::from_output(Some(Path::new("-"))), Target::Stdout);
        assert_eq!(Target::from_output(Some(Path::new("x.iso"))), Target::File(Path::new("x.iso")));
    }
}
