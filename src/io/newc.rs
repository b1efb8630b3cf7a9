//! The newc ("070701") cpio format, the one the kernel's initramfs unpacker reads: a
//! streaming writer and a parser of regular files. Used for the ISO embed areas, the
//! appended live initramfs archives and the test fixtures' initramfs images.
//!
//! Every entry is owned by root with mtime 0 and nlink 1 (directories too, as
//! coreos-installer writes them; the unpacker ignores nlink of directories), so an archive
//! depends only on its inputs.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{ensure, Context, Result};

pub const MAGIC: &[u8; 6] = b"070701";
/// The same header with a checksum field; read, never written.
pub const CRC_MAGIC: &[u8; 6] = b"070702";
pub const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
const S_IFMT: u32 = 0o170_000;

/// Padding after `len` bytes up to the format's 4-byte alignment.
pub fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Streaming newc writer. Inode numbers run from the first one given, one per entry.
pub struct NewcWriter<W: Write> {
    w: W,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(w: W, first_ino: u32) -> Self {
        NewcWriter {
            w,
            next_ino: first_ino,
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> std::io::Result<()> {
        self.entry(path, S_IFDIR | perm, &[], (0, 0))
    }

    pub fn file(&mut self, path: &str, data: &[u8], perm: u32) -> std::io::Result<()> {
        self.entry(path, S_IFREG | perm, data, (0, 0))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes(), (0, 0))
    }

    /// Any entry; `rdev` is (major, minor) for device nodes.
    pub fn entry(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_entry(ino, path, mode, data, rdev)
    }

    /// A regular file whose data is streamed from `data` (`size` bytes exactly): for
    /// members too large to hold in memory, such as a live root squashfs.
    pub fn file_from(
        &mut self,
        path: &str,
        perm: u32,
        size: u64,
        data: impl std::io::Read,
    ) -> Result<()> {
        let size32 = u32::try_from(size)
            .with_context(|| format!("cpio member {path}: {size} bytes, more than newc's 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.w
            .write_all(&header(ino, S_IFREG | perm, size32, path, (0, 0)))?;
        let copied = std::io::copy(&mut data.take(size), &mut self.w)?;
        ensure!(
            copied == size,
            "cpio member {path}: its source ended after {copied} of {size} bytes"
        );
        self.pad_data(size as usize)?;
        Ok(())
    }

    fn write_entry(
        &mut self,
        ino: u32,
        path: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "cpio member over 4 GiB")
        })?;
        self.w.write_all(&header(ino, mode, size, path, rdev))?;
        self.w.write_all(data)?;
        self.pad_data(data.len())
    }

    /// Zero padding after a member's data. The writer is flushed after padding, as
    /// coreos-installer's cpio writer is: under an xz encoder a flush ends an LZMA2 chunk,
    /// which shows in the compressed bytes, so an embed area stays byte-identical to one
    /// coreos-installer writes.
    fn pad_data(&mut self, len: usize) -> std::io::Result<()> {
        let n = pad4(len);
        if n > 0 {
            self.w.write_all(&[0u8; 3][..n])?;
            self.w.flush()?;
        }
        Ok(())
    }

    /// Write the trailer (inode 0) and hand back the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.write_entry(0, TRAILER, 0, &[], (0, 0))?;
        Ok(self.w)
    }
}

fn header(ino: u32, mode: u32, size: u32, path: &str, rdev: (u32, u32)) -> Vec<u8> {
    let name_len = path.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        size,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name_len as u32,
        0, // check
    ];
    let mut h = Vec::with_capacity(HEADER_LEN + name_len + 3);
    h.extend_from_slice(MAGIC);
    for f in fields {
        h.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    h.extend_from_slice(path.as_bytes());
    h.push(0);
    h.resize(h.len() + pad4(HEADER_LEN + name_len), 0);
    h
}

/// Header field `index` (0 = inode … 12 = check) of the header at the front of `header`.
pub fn hex_field(header: &[u8], index: usize) -> Result<u32> {
    let raw = header
        .get(6 + index * 8..6 + (index + 1) * 8)
        .context("truncated cpio header")?;
    let s = std::str::from_utf8(raw)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
    let s = s.with_context(|| {
        format!(
            "bad hex field {:?} in cpio header",
            String::from_utf8_lossy(raw)
        )
    })?;
    Ok(u32::from_str_radix(s, 16)?)
}

/// Parse one newc archive up to and including its trailer, adding regular files to
/// `members` (pure). Returns the number of bytes consumed.
pub fn parse_regular_files(data: &[u8], members: &mut BTreeMap<String, Vec<u8>>) -> Result<usize> {
    let mut pos = 0usize;
    loop {
        let header = data
            .get(pos..pos + HEADER_LEN)
            .context("truncated cpio header")?;
        ensure!(
            &header[..6] == MAGIC || &header[..6] == CRC_MAGIC,
            "bad cpio magic at offset {pos}"
        );
        let mode = hex_field(header, 1)?;
        let size = hex_field(header, 6)? as usize;
        let namesize = hex_field(header, 11)? as usize;
        ensure!(namesize >= 1, "empty cpio member name at offset {pos}");
        let name_start = pos + HEADER_LEN;
        let name_raw = data
            .get(name_start..name_start + namesize)
            .context("truncated cpio member name")?;
        let name =
            std::str::from_utf8(&name_raw[..namesize - 1]).context("non-UTF-8 cpio member name")?;
        let data_start = name_start + namesize + pad4(HEADER_LEN + namesize);
        let contents = data
            .get(data_start..data_start + size)
            .with_context(|| format!("truncated cpio member {name}"))?;
        pos = data_start + size + pad4(size);
        if name == TRAILER {
            return Ok(pos.min(data.len()));
        }
        if mode & S_IFMT == S_IFREG {
            let name = name.trim_start_matches("./").trim_start_matches('/');
            members.insert(name.to_string(), contents.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_members_parse_back_and_are_aligned() {
        let mut w = NewcWriter::new(Vec::new(), 1);
        w.dir("d", 0o755).unwrap();
        w.file("d/f.txt", b"hello", 0o644).unwrap();
        w.symlink("d/l", "f.txt").unwrap();
        w.file_from("big", 0o600, 7, &b"1234567"[..]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let mut members = BTreeMap::new();
        assert_eq!(
            parse_regular_files(&bytes, &mut members).unwrap(),
            bytes.len()
        );
        assert_eq!(
            members,
            BTreeMap::from([
                ("big".to_string(), b"1234567".to_vec()),
                ("d/f.txt".to_string(), b"hello".to_vec()),
            ])
        );
        // Inodes run from the first one given; the trailer's is 0.
        assert_eq!(hex_field(&bytes, 0).unwrap(), 1);
    }

    /// GNU cpio, the reference reader, unpacks what the writer wrote.
    #[test]
    fn gnu_cpio_extracts_it() {
        assert!(
            crate::cmd::have("cpio"),
            "this test needs 'cpio': install the Debian package 'cpio'"
        );
        let mut w = NewcWriter::new(Vec::new(), 1);
        w.dir("d", 0o755).unwrap();
        w.file("d/f.txt", b"hello", 0o644).unwrap();
        w.file("odd", b"123", 0o600).unwrap();
        w.symlink("d/l", "f.txt").unwrap();
        let bytes = w.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(d.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(d.path().join("d/f.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(d.path().join("odd")).unwrap(), b"123");
        assert_eq!(
            std::fs::read_link(d.path().join("d/l")).unwrap(),
            std::path::Path::new("f.txt")
        );
    }

    #[test]
    fn a_short_streamed_member_is_an_error() {
        let mut w = NewcWriter::new(Vec::new(), 0);
        let err = w.file_from("x", 0o644, 10, &b"abc"[..]).unwrap_err();
        assert!(
            err.to_string().contains("ended after 3 of 10 bytes"),
            "{err}"
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut m = BTreeMap::new();
        for bad in [&b""[..], b"070701zz", b"123456", &[b'0'; 200]] {
            assert!(parse_regular_files(bad, &mut m).is_err());
        }
    }
}
