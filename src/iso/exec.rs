//! Apply an [`IsoWrites`]: in place (only the planned byte ranges are written), to a new file
//! (streamed, renamed into place on success), or to stdout. Memory stays flat in the ISO
//! size: unchanged ranges are copied with `io::copy`, which the kernel does for file to
//! file (copy_file_range) and file to pipe (splice/sendfile).

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::plan::IsoWrites;
use crate::cancel::Cancel;
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

/// Unchanged ranges are copied in pieces this large, checking the cancel token in between.
const COPY_CHUNK: u64 = 64 << 20;

/// Copy exactly `len` bytes (`None`: to the end) from `input` to `out`.
fn copy_range(
    input: &mut File,
    out: &mut impl Write,
    len: Option<u64>,
    cancel: &Cancel,
) -> Result<u64> {
    let mut done = 0u64;
    loop {
        cancel.check()?;
        let want = len.map_or(COPY_CHUNK, |l| (l - done).min(COPY_CHUNK));
        if want == 0 {
            return Ok(done);
        }
        let n = io::copy(&mut Read::by_ref(input).take(want), out).context("copying the ISO")?;
        done += n;
        if n < want {
            return match len {
                Some(_) => bail!("the ISO ended early while copying"),
                None => Ok(done),
            };
        }
    }
}

/// Copy `input` to `out`, substituting the planned writes.
pub fn stream_with_plan(
    input: &mut File,
    plan: &IsoWrites,
    out: &mut impl Write,
    cancel: &Cancel,
) -> Result<u64> {
    input.seek(SeekFrom::Start(0)).context("seeking input")?;
    let mut pos = 0u64;
    for w in &plan.writes {
        copy_range(input, out, Some(w.offset - pos), cancel)?;
        out.write_all(&w.bytes)
            .with_context(|| format!("writing the {}", w.what))?;
        input
            .seek(SeekFrom::Current(w.length as i64))
            .context("seeking input")?;
        pos = w.offset + w.length;
    }
    let rest = copy_range(input, out, None, cancel)?;
    out.flush().context("flushing output")?;
    Ok(pos + rest)
}

/// Write the planned areas into `f` (a copy of the ISO, or the ISO itself).
fn patch(f: &mut File, plan: &IsoWrites) -> Result<()> {
    for w in &plan.writes {
        f.seek(SeekFrom::Start(w.offset))
            .with_context(|| format!("seeking to the {}", w.what))?;
        f.write_all(&w.bytes)
            .with_context(|| format!("writing the {}", w.what))?;
    }
    f.flush().context("flushing")
}

/// Apply `plan` to the ISO at `input`. Cancelled, an `-o` output is not written at all
/// (its temporary file is removed); in place, the few planned writes are not cut short.
pub fn apply(input: &Path, plan: &IsoWrites, target: Target, cancel: &Cancel) -> Result<()> {
    match target {
        Target::InPlace => {
            let mut f = crate::io::open_rw(input)?;
            // No fsync, as coreos-installer: the writes are a few hundred KiB, but an fsync
            // would also flush whatever else of the (GiB-sized) image is still dirty.
            patch(&mut f, plan).with_context(|| format!("writing {}", input.display()))?;
        }
        Target::File(dest) => {
            let mut src =
                File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let mode = if plan.secret {
                crate::io::SECRET_MODE
            } else {
                crate::io::ORDINARY_MODE
            };
            let mut out = AtomicFile::create(dest, mode)?;
            // Copy the whole image, then patch the areas: embed areas need not be page
            // aligned, and a kernel copy resumed at an unaligned offset after an area runs
            // ~1.5x slower than one aligned copy.
            copy_range(&mut src, out.file(), None, cancel)
                .with_context(|| format!("writing {}", dest.display()))?;
            patch(out.file(), plan).with_context(|| format!("writing {}", dest.display()))?;
            // the last moment to stop: after the rename, the output exists whole
            cancel.check()?;
            out.commit_unsynced()?;
        }
        Target::Stdout => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write an ISO image to a terminal: redirect stdout or use -o FILE"
                );
            }
            let mut src =
                File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let mut lock = stdout.lock();
            stream_with_plan(&mut src, plan, &mut lock, cancel)
                .map_err(crate::output::closed_stdout_or)
                .context("writing the ISO to stdout")?;
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
        let plan = IsoWrites {
            writes: vec![
                PlanWrite {
                    what: "a".into(),
                    offset: 0,
                    bytes: vec![1; 3],
                    length: 3,
                },
                PlanWrite {
                    what: "b".into(),
                    offset: 5000,
                    bytes: vec![2; 10],
                    length: 10,
                },
                PlanWrite {
                    what: "c".into(),
                    offset: 9990,
                    bytes: vec![3; 10],
                    length: 10,
                },
            ],
            notes: vec![],
            secret: false,
        };
        let mut want = data.clone();
        want[..3].fill(1);
        want[5000..5010].fill(2);
        want[9990..].fill(3);

        let out = dir.path().join("out");
        let cancel = Cancel::new();
        apply(&input, &plan, Target::File(&out), &cancel).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want);
        assert_eq!(
            std::fs::read(&input).unwrap(),
            data,
            "input untouched by -o"
        );

        let mut buf = Vec::new();
        stream_with_plan(&mut File::open(&input).unwrap(), &plan, &mut buf, &cancel).unwrap();
        assert_eq!(buf, want);

        apply(&input, &plan, Target::InPlace, &cancel).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), want);

        // cancelled: no -o output, no temporary file
        let cancelled = Cancel::new();
        cancelled.cancel_by(libc::SIGTERM);
        let never = dir.path().join("never");
        let err = apply(&input, &plan, Target::File(&never), &cancelled).unwrap_err();
        assert!(
            format!("{err:#}").contains("interrupted by SIGTERM"),
            "{err:#}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn targets_from_output() {
        assert_eq!(Target::from_output(None), Target::InPlace);
        assert_eq!(Target::from_output(Some(Path::new("-"))), Target::Stdout);
        assert_eq!(
            Target::from_output(Some(Path::new("x.iso"))),
            Target::File(Path::new("x.iso"))
        );
    }
}
