//! The published artifact: qcow2 conversion (qemu-img), compression (xz or gzip, both on
//! every core), sha256 of the compressed and uncompressed bytes in the same pass, and the CoreOS
//! stream metadata that describes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Cancel;
use crate::bootimage::Compression;
use crate::cmd;
use crate::io::{AtomicFile, HashingReader, HashingWriter};

pub fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<()> {
    cmd::require("qemu-img", "qemu-utils")?;
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2);
    cmd::run(&mut c)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub sha256: String,
    pub size: u64,
    pub uncompressed_sha256: String,
    pub uncompressed_size: u64,
}

/// A reader that fails with "cancelled" once the build is cancelled.
struct CancelReader<'a, R> {
    inner: R,
    cancel: &'a Cancel,
}

impl<R: Read> Read for CancelReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        self.inner.read(buf)
    }
}

fn copy_all(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// Compress `input` into `out` (an uncommitted atomic file), hashing both sides.
pub fn compress(
    input: &Path,
    out: &mut AtomicFile,
    compression: Compression,
    level: u32,
    cancel: &Cancel,
) -> Result<Hashes> {
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let dest = out.dest().to_path_buf();
    let mut reader = HashingReader::new(CancelReader {
        inner: BufReader::with_capacity(1 << 20, f),
        cancel,
    });
    let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, out.file().try_clone()?));
    let sink = match compression {
        Compression::None => {
            let mut w = sink;
            copy_all(&mut reader, &mut w).with_context(|| format!("writing {}", dest.display()))?;
            w
        }
        Compression::Xz => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            let stream = xz2::stream::MtStreamBuilder::new()
                .threads(threads)
                .preset(level)
                .check(xz2::stream::Check::Crc64)
                .encoder()
                .context("setting up the xz encoder")?;
            let mut w = xz2::write::XzEncoder::new_stream(sink, stream);
            copy_all(&mut reader, &mut w)
                .with_context(|| format!("compressing {}", input.display()))?;
            w.finish()?
        }
        Compression::Gzip => {
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let mut w = crate::io::ParallelGzWriter::new(sink, level, threads)?;
            copy_all(&mut reader, &mut w)
                .with_context(|| format!("compressing {}", input.display()))?;
            w.finish()?
        }
    };
    let (mut buf, sha256, size) = sink.finish();
    buf.flush()
        .with_context(|| format!("writing {}", dest.display()))?;
    let (uncompressed_sha256, uncompressed_size) = reader.finish();
    Ok(Hashes {
        sha256,
        size,
        uncompressed_sha256,
        uncompressed_size,
    })
}

/// CoreOS stream metadata (the schema Fedora CoreOS publishes at
/// `builds.coreos.fedoraproject.org/streams/<stream>.json`), reduced to disk artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub stream: String,
    pub metadata: StreamMetadata,
    pub architectures: BTreeMap<String, Arch>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    #[serde(rename = "last-modified")]
    pub last_modified: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    pub artifacts: BTreeMap<String, PlatformArtifacts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformArtifacts {
    pub release: String,
    pub formats: BTreeMap<String, BTreeMap<String, Artifact>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub location: String,
    pub sha256: String,
    #[serde(
        rename = "uncompressed-sha256",
        skip_serializing_if = "Option::is_none"
    )]
    pub uncompressed_sha256: Option<String>,
}

/// Add (or replace) one disk artifact in `existing` (a stream file from an earlier build,
/// so metal and metal4k can share one), pure.
pub fn add_to_stream(
    existing: Option<Stream>,
    stream_name: &str,
    now: &str,
    arch: &str,
    platform: &str,
    release: &str,
    format: &str,
    artifact: Artifact,
) -> Stream {
    let mut s = existing.unwrap_or_default();
    s.stream = stream_name.to_string();
    s.metadata.last_modified = now.to_string();
    let p = s
        .architectures
        .entry(arch.to_string())
        .or_default()
        .artifacts
        .entry(platform.to_string())
        .or_default();
    if p.release != release {
        // Artifacts of another release are stale next to this one.
        p.formats.clear();
    }
    p.release = release.to_string();
    p.formats
        .entry(format.to_string())
        .or_default()
        .insert("disk".to_string(), artifact);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_json_matches_coreos_schema() {
        let a = Artifact {
            location: "https://example.com/x-qemu.x86_64.qcow2.xz".into(),
            sha256: "aa".into(),
            uncompressed_sha256: Some("bb".into()),
        };
        let s = add_to_stream(
            None,
            "layered",
            "2026-01-01T00:00:00Z",
            "x86_64",
            "qemu",
            "41.1",
            "qcow2.xz",
            a.clone(),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["architectures"]["x86_64"]["artifacts"]["qemu"]["formats"]["qcow2.xz"]["disk"]
                ["uncompressed-sha256"],
            "bb"
        );
        assert_eq!(v["metadata"]["last-modified"], "2026-01-01T00:00:00Z");
        assert_eq!(
            v["architectures"]["x86_64"]["artifacts"]["qemu"]["release"],
            "41.1"
        );
        // A second platform and format merge in; a new release replaces stale formats.
        let s = add_to_stream(
            Some(s),
            "layered",
            "t2",
            "x86_64",
            "metal",
            "41.1",
            "4k.raw.xz",
            a.clone(),
        );
        let s = add_to_stream(
            Some(s),
            "layered",
            "t3",
            "x86_64",
            "metal",
            "41.1",
            "raw.xz",
            a.clone(),
        );
        assert_eq!(
            s.architectures["x86_64"].artifacts["metal"].formats.len(),
            2
        );
        assert_eq!(s.architectures["x86_64"].artifacts.len(), 2);
        let s = add_to_stream(
            Some(s),
            "layered",
            "t4",
            "x86_64",
            "metal",
            "42.0",
            "raw.xz",
            a,
        );
        assert_eq!(
            s.architectures["x86_64"].artifacts["metal"]
                .formats
                .keys()
                .collect::<Vec<_>>(),
            ["raw.xz"]
        );
    }

    #[test]
    fn compress_hashes_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, vec![b'a'; 3 << 20]).unwrap();
        for c in [Compression::None, Compression::Xz, Compression::Gzip] {
            let dest = dir.path().join(format!("out{}", c.suffix()));
            let mut out = AtomicFile::create(&dest, 0o644).unwrap();
            let h = compress(
                &input,
                &mut out,
                c,
                if c == Compression::Xz { 0 } else { 1 },
                &Cancel::default(),
            )
            .unwrap();
            out.commit().unwrap();
            assert_eq!(
                h.uncompressed_sha256,
                crate::io::sha256_file(&input).unwrap().0
            );
            assert_eq!(
                (h.sha256.clone(), h.size),
                crate::io::sha256_file(&dest).unwrap()
            );
            let mut back = Vec::new();
            match c {
                Compression::None => back = std::fs::read(&dest).unwrap(),
                Compression::Xz => {
                    xz2::read::XzDecoder::new(File::open(&dest).unwrap())
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(File::open(&dest).unwrap())
                        .read_to_end(&mut back)
                        .unwrap();
                }
            }
            assert_eq!(back.len(), 3 << 20, "{c:?}");
        }
        let cancel = Cancel::default();
        cancel.cancel();
        let mut out = AtomicFile::create(dir.path().join("never"), 0o644).unwrap();
        assert!(compress(&input, &mut out, Compression::Xz, 0, &cancel).is_err());
    }
}
