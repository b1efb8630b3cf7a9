//! The Ignition embed area payload: a newc cpio archive, xz-compressed with a CRC32
//! check, zero-padded to the area size. The bootloader hands the area to the kernel as a
//! second initrd, so the kernel's initramfs unpacker is the real consumer: it only accepts
//! xz with CRC32 (or none) and skips zero padding between archives.
//!
//! Written byte for byte the way coreos-installer writes it (members sorted by path,
//! parent directories 040755 created on the way, files 0100600, inode = running index,
//! nlink 1, mtime 0, uid/gid 0, xz preset 9), so an ISO customized by either tool carries
//! the same bytes for the same inputs.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};
use xz2::stream::{Action, Status, Stream};

use crate::io::newc::{self, NewcWriter};

/// Where the live initramfs reads NetworkManager keyfiles from.
pub const NETWORK_DIR: &str = "etc/coreos-firstboot-network";
/// The live Ignition config, at the root of the embedded archive.
pub const IGNITION_PATH: &str = "config.ign";

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";
/// Decompressed payloads larger than this are refused (a corrupt or hostile area must
/// not make us allocate without bound; real payloads are a few KiB).
const MAX_DECOMPRESSED: u64 = 64 << 20;

/// The regular files in an embed-area payload, by path (no leading `/`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Payload {
    members: BTreeMap<String, Vec<u8>>,
}

impl Payload {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.members.get(path).map(Vec::as_slice)
    }

    pub fn insert(&mut self, path: impl Into<String>, contents: Vec<u8>) {
        self.members.insert(path.into(), contents);
    }

    pub fn members(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// NetworkManager keyfiles, by file name.
    pub fn network_keyfiles(&self) -> BTreeMap<&str, &[u8]> {
        let prefix = format!("{NETWORK_DIR}/");
        self.members
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .filter(|n| !n.contains('/'))
                    .map(|n| (n, v.as_slice()))
            })
            .collect()
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_cpio(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Write the newc archive (see the module doc for the layout; the writer flushes as
    /// coreos-installer's does, which keeps the xz bytes identical).
    fn write_cpio(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut w = NewcWriter::new(out, 0);
        let mut cwd: Vec<&str> = Vec::new();
        for (path, contents) in &self.members {
            let mut parent: Vec<&str> = path.split('/').collect();
            parent.pop();
            let common = cwd.iter().zip(&parent).take_while(|(a, b)| a == b).count();
            cwd.truncate(common);
            for component in &parent[common..] {
                cwd.push(component);
                w.dir(&cwd.join("/"), 0o755)?;
            }
            w.file(path, contents, 0o600)?;
        }
        w.finish().map(drop)
    }

    /// The payload as stored in the embed area (before zero padding): xz, CRC32 check.
    /// An empty payload is stored as no bytes at all (an all-zero area).
    pub fn to_area_bytes(&self) -> Result<Vec<u8>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let mut enc = super::xz::XzVecWriter::new(9)?;
        self.write_cpio(&mut enc)
            .context("compressing embed payload")?;
        enc.finish().context("finishing xz stream")
    }

    /// Parse an embed area: zero or more archives (xz, gzip or uncompressed newc),
    /// separated and followed by zero padding. Later copies of a path win, as in the
    /// kernel's unpacker.
    pub fn from_area_bytes(area: &[u8]) -> Result<Self> {
        let mut payload = Payload::default();
        let mut rest = area;
        loop {
            let skip = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
            rest = &rest[skip..];
            if rest.is_empty() {
                return Ok(payload);
            }
            let offset = area.len() - rest.len();
            if rest.starts_with(XZ_MAGIC) {
                let (data, used) = xz_decode_one(rest)
                    .with_context(|| format!("decompressing xz archive at area offset {offset}"))?;
                rest = &rest[used..];
                newc::parse_regular_files(&data, &mut payload.members)
                    .with_context(|| format!("reading cpio archive at area offset {offset}"))?;
            } else if rest.starts_with(GZIP_MAGIC) {
                let mut dec = flate2::bufread::GzDecoder::new(rest);
                let data = read_bounded(&mut dec).with_context(|| {
                    format!("decompressing gzip archive at area offset {offset}")
                })?;
                rest = dec.into_inner();
                newc::parse_regular_files(&data, &mut payload.members)
                    .with_context(|| format!("reading cpio archive at area offset {offset}"))?;
            } else if rest.starts_with(newc::MAGIC) || rest.starts_with(newc::CRC_MAGIC) {
                let used = newc::parse_regular_files(rest, &mut payload.members)
                    .with_context(|| format!("reading cpio archive at area offset {offset}"))?;
                rest = &rest[used..];
            } else if rest.starts_with(ZSTD_MAGIC) {
                bail!("zstd-compressed archive at embed area offset {offset}: not supported, only xz, gzip and uncompressed cpio");
            } else {
                bail!("unrecognized data at embed area offset {offset}: not an xz, gzip or cpio archive");
            }
        }
    }
}

/// Decode exactly one xz stream from the front of `input`: the decompressed bytes and the
/// number of input bytes it occupied (what follows may be padding or another archive).
fn xz_decode_one(input: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0)?;
    let mut out = Vec::with_capacity(input.len() * 4);
    loop {
        if out.len() == out.capacity() {
            ensure!(
                (out.len() as u64) < MAX_DECOMPRESSED,
                "decompresses to more than {MAX_DECOMPRESSED} bytes"
            );
            out.reserve(out.len().max(64 << 10));
        }
        let (in_before, out_before) = (stream.total_in(), out.len());
        let status = stream.process_vec(&input[in_before as usize..], &mut out, Action::Run)?;
        if status == Status::StreamEnd {
            return Ok((out, stream.total_in() as usize));
        }
        if stream.total_in() == in_before && out.len() == out_before {
            bail!("truncated xz stream");
        }
    }
}

fn read_bounded(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    r.take(MAX_DECOMPRESSED + 1).read_to_end(&mut data)?;
    ensure!(
        (data.len() as u64) <= MAX_DECOMPRESSED,
        "decompresses to more than {MAX_DECOMPRESSED} bytes"
    );
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::newc::{hex_field, pad4, TRAILER};

    fn payload(files: &[(&str, &str)]) -> Payload {
        let mut p = Payload::default();
        for (k, v) in files {
            p.insert(*k, v.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn cpio_layout_matches_coreos_installer() {
        // Golden bytes: directories are emitted once, in sorted walk order, with running
        // inode numbers; the trailer has inode 0 and nlink 1.
        let p = payload(&[
            ("config.ign", "{}\n"),
            ("etc/coreos-firstboot-network/a.nmconnection", "x"),
        ]);
        let cpio = p.to_cpio();
        let mut entries = Vec::new();
        let mut pos = 0;
        while pos < cpio.len() {
            let h = &cpio[pos..pos + 110];
            let fields: Vec<u32> = (0..13).map(|i| hex_field(h, i).unwrap()).collect();
            let name = std::str::from_utf8(&cpio[pos + 110..pos + 110 + fields[11] as usize - 1])
                .unwrap()
                .to_string();
            entries.push((name.clone(), fields[0], fields[1], fields[4], fields[5]));
            let ds = pos + 110 + fields[11] as usize + pad4(110 + fields[11] as usize);
            pos = ds + fields[6] as usize + pad4(fields[6] as usize);
            if name == TRAILER {
                break;
            }
        }
        assert_eq!(pos, cpio.len(), "no padding after the trailer");
        assert_eq!(
            entries,
            vec![
                ("config.ign".into(), 0, 0o100600, 1, 0),
                ("etc".into(), 1, 0o40755, 1, 0),
                ("etc/coreos-firstboot-network".into(), 2, 0o40755, 1, 0),
                (
                    "etc/coreos-firstboot-network/a.nmconnection".into(),
                    3,
                    0o100600,
                    1,
                    0
                ),
                (TRAILER.into(), 0, 0, 1, 0),
            ]
        );
        assert_eq!(
            &cpio[..110],
            concat!(
                "070701", "00000000", "00008180", "00000000", "00000000", "00000001", "00000000",
                "00000003", "00000000", "00000000", "00000000", "00000000", "0000000b", "00000000"
            )
            .as_bytes()
        );
    }

    #[test]
    fn roundtrip_through_xz_with_crc32_and_padding() {
        let cases: &[&[(&str, &str)]] = &[
            &[("config.ign", "{\"ignition\":{\"version\":\"3.3.0\"}}\n")],
            &[
                ("config.ign", "a"),
                (
                    "etc/coreos-firstboot-network/eth0.nmconnection",
                    "[connection]\n",
                ),
            ],
            &[("a/b/c/d", ""), ("a/b/e", "12345"), ("z", "zz")],
        ];
        for files in cases {
            let p = payload(files);
            let mut area = p.to_area_bytes().unwrap();
            assert_eq!(&area[..6], XZ_MAGIC);
            // stream flags byte 7: check type 1 = CRC32
            assert_eq!(area[7], 0x01, "xz check must be CRC32");
            area.resize(area.len() + 4096, 0);
            assert_eq!(Payload::from_area_bytes(&area).unwrap(), p);
        }
    }

    #[test]
    fn empty_payload_is_an_all_zero_area() {
        assert!(Payload::default().to_area_bytes().unwrap().is_empty());
        assert!(Payload::from_area_bytes(&[0; 1024]).unwrap().is_empty());
    }

    #[test]
    fn concatenated_archives_last_wins() {
        let mut area = payload(&[("config.ign", "old"), ("keep", "k")]).to_cpio();
        area.extend_from_slice(&[0; 16]);
        area.extend(payload(&[("config.ign", "new")]).to_area_bytes().unwrap());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&payload(&[("g", "gzip")]).to_cpio()).unwrap();
        area.extend(gz.finish().unwrap());
        let p = Payload::from_area_bytes(&area).unwrap();
        assert_eq!(
            p,
            payload(&[("config.ign", "new"), ("g", "gzip"), ("keep", "k")])
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello", "unrecognized data at embed area offset 0"),
            (b"\0\0\0\0\x28\xb5\x2f\xfd", "zstd"),
            (b"070701zz", "truncated cpio header"),
            (b"\xfd7zXZ\x00garbage", "decompressing xz"),
        ];
        for (input, want) in cases {
            let err = format!("{:#}", Payload::from_area_bytes(input).unwrap_err());
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn network_keyfiles_by_name() {
        let p = payload(&[
            ("config.ign", "{}"),
            ("etc/coreos-firstboot-network/a.nmconnection", "A"),
            ("etc/other", "o"),
        ]);
        assert_eq!(
            p.network_keyfiles().into_iter().collect::<Vec<_>>(),
            vec![("a.nmconnection", &b"A"[..])]
        );
    }
}
