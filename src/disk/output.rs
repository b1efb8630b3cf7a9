//! The published artifact: conversion to the platform's disk format (qemu-img), compression (xz or gzip, both on
//! every core), sha256 of the compressed and uncompressed bytes in the same pass, and the CoreOS
//! stream metadata that describes it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::Cancel;
use crate::bootimage::{Compression, Format};
use crate::cmd;
use crate::io::{AtomicFile, HashingReader, HashingWriter};

/// `qemu-img convert` of the raw disk into `format` with the options CoreOS converts with
/// ([`Format::qemu_img`]); `compressed`: qcow2 clusters compressed (`-c`).
pub fn convert(raw: &Path, dest: &Path, format: Format, compressed: bool) -> Result<()> {
    cmd::require("qemu-img", "qemu-utils")?;
    let (name, options) = format.qemu_img();
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", name]);
    if let Some(o) = options {
        c.args(["-o", o]);
    }
    if compressed {
        c.arg("-c");
    }
    c.arg(raw).arg(dest);
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

pub use crate::stream::{
    artifact, artifact_location, parse_base_url, read_stream, Artifact, Stream,
};

/// Where one artifact goes in a stream file: `architectures.<arch>.artifacts.<platform>`
/// (of `release`), `formats.<format>`.
#[derive(Debug, Clone, Copy)]
pub struct StreamKey<'a> {
    pub arch: &'a str,
    pub platform: &'a str,
    pub release: &'a str,
    pub format: &'a str,
    /// The artifact's key in the format: `disk`; `kernel`, `initramfs`, `rootfs` for PXE.
    pub entry: &'a str,
}

/// Add (or replace) one disk artifact in `existing` (a stream file from an earlier build,
/// so metal and metal4k can share one), pure.
pub fn add_to_stream(
    existing: Option<Stream>,
    stream_name: &str,
    now: &str,
    key: StreamKey<'_>,
    artifact: Artifact,
) -> Stream {
    let StreamKey {
        arch,
        platform,
        release,
        format,
        entry,
    } = key;
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
        .insert(entry.to_string(), artifact);
    // Artifacts written by earlier layerboot versions have no signature, which makes
    // coreos-installer refuse the whole format: give them the one they would get now.
    for a in s.architectures.values_mut() {
        for p in a.artifacts.values_mut() {
            for art in p.formats.values_mut().flat_map(|f| f.values_mut()) {
                if art.signature.is_empty() {
                    art.signature = format!("{}.sig", art.location);
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_json_matches_coreos_schema() {
        let a = artifact(
            "https://example.com/x-qemu.x86_64.qcow2.xz".into(),
            &Hashes {
                sha256: "aa".into(),
                size: 1,
                uncompressed_sha256: "bb".into(),
                uncompressed_size: 2,
            },
        );
        let s = add_to_stream(
            None,
            "layered",
            "2026-01-01T00:00:00Z",
            StreamKey {
                arch: "x86_64",
                platform: "qemu",
                release: "41.1",
                format: "qcow2.xz",
                entry: "disk",
            },
            a.clone(),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["architectures"]["x86_64"]["artifacts"]["qemu"]["formats"]["qcow2.xz"]["disk"]
                ["uncompressed-sha256"],
            "bb"
        );
        assert_eq!(
            v["architectures"]["x86_64"]["artifacts"]["qemu"]["formats"]["qcow2.xz"]["disk"]
                ["signature"],
            "https://example.com/x-qemu.x86_64.qcow2.xz.sig"
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
            StreamKey {
                arch: "x86_64",
                platform: "metal",
                release: "41.1",
                format: "4k.raw.xz",
                entry: "disk",
            },
            a.clone(),
        );
        let s = add_to_stream(
            Some(s),
            "layered",
            "t3",
            StreamKey {
                arch: "x86_64",
                platform: "metal",
                release: "41.1",
                format: "raw.xz",
                entry: "disk",
            },
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
            StreamKey {
                arch: "x86_64",
                platform: "metal",
                release: "42.0",
                format: "raw.xz",
                entry: "disk",
            },
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

    /// What coreos-installer 0.27 (`src/source.rs`) does with an artifact: both URLs parsed
    /// as absolute URLs.
    fn coreos_installer_takes(a: &Artifact) -> bool {
        url::Url::parse(&a.location).is_ok() && url::Url::parse(&a.signature).is_ok()
    }

    #[test]
    fn locations_are_urls_under_the_base() {
        let f = "os-41-metal.x86_64.raw.xz";
        let cases: &[(Option<&str>, &str)] = &[
            (
                Some("https://images.example.com/streams/"),
                "https://images.example.com/streams/os-41-metal.x86_64.raw.xz",
            ),
            (
                Some("https://images.example.com/streams"),
                "https://images.example.com/streams/os-41-metal.x86_64.raw.xz",
            ),
            (
                Some("http://127.0.0.1:8080"),
                "http://127.0.0.1:8080/os-41-metal.x86_64.raw.xz",
            ),
            (None, "os-41-metal.x86_64.raw.xz"),
        ];
        for (base, want) in cases {
            let base = base.map(|b| parse_base_url(b).unwrap());
            let loc = artifact_location(base.as_ref(), f);
            assert_eq!(loc, *want);
            let a = artifact(
                loc,
                &Hashes {
                    sha256: String::new(),
                    size: 0,
                    uncompressed_sha256: String::new(),
                    uncompressed_size: 0,
                },
            );
            assert_eq!(a.signature, format!("{want}.sig"));
            // Without a base URL the stream is not one coreos-installer can read.
            assert_eq!(coreos_installer_takes(&a), base.is_some(), "{want}");
        }
        // One path segment, whatever the name holds.
        let base = parse_base_url("https://h/d/").unwrap();
        assert_eq!(
            artifact_location(Some(&base), "a b#c?.raw"),
            "https://h/d/a%20b%23c%3F.raw"
        );
        for (bad, want) in [
            ("images.example.com/streams/", "is not an absolute URL"),
            ("file:///srv/streams/", "must be an http(s) URL"),
            ("https://h/d/?x=1", "no query or fragment"),
        ] {
            let e = parse_base_url(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn existing_streams_are_merged_or_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.json");
        assert_eq!(read_stream(&path).unwrap(), None);
        // A stream of an earlier layerboot (no signature) merges, and gets one.
        std::fs::write(
            &path,
            r#"{"stream": "layered", "metadata": {"last-modified": "t"}, "architectures": {"x86_64": {"artifacts": {"metal": {"release": "1", "formats": {"raw.xz": {"disk": {"location": "https://h/a.raw.xz", "sha256": "aa"}}}}}}}}"#,
        )
        .unwrap();
        let old = read_stream(&path).unwrap().unwrap();
        let s = add_to_stream(
            Some(old),
            "layered",
            "t2",
            StreamKey {
                arch: "x86_64",
                platform: "metal",
                release: "1",
                format: "4k.raw.xz",
                entry: "disk",
            },
            artifact(
                "https://h/b.raw.xz".into(),
                &Hashes {
                    sha256: "bb".into(),
                    size: 1,
                    uncompressed_sha256: "cc".into(),
                    uncompressed_size: 2,
                },
            ),
        );
        let formats = &s.architectures["x86_64"].artifacts["metal"].formats;
        assert_eq!(
            formats["raw.xz"]["disk"].signature,
            "https://h/a.raw.xz.sig"
        );
        assert_eq!(
            formats["4k.raw.xz"]["disk"].signature,
            "https://h/b.raw.xz.sig"
        );
        for bad in ["{not json", "[]", r#"{"architectures": 3}"#] {
            std::fs::write(&path, bad).unwrap();
            let e = format!("{:#}", read_stream(&path).unwrap_err());
            assert!(
                e.starts_with(&format!("{}: not CoreOS stream metadata", path.display())),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
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
