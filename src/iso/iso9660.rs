//! Just enough ISO 9660 to find files: the Primary Volume Descriptor and directory
//! records, over any `Read + Seek`. No Rock Ridge or Joliet: CoreOS tools address files
//! by their primary (8.3, upper-case) names, e.g. `COREOS/IGNINFO.JSO`.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, ensure, Context, Result};

pub const SECTOR: u64 = 2048;
/// Volume descriptors start at sector 16 (the first 32 KiB are the system area).
const DESCRIPTOR_START: u64 = 16;
/// Directory extents larger than this are treated as corrupt.
const MAX_DIR_LEN: u32 = 16 << 20;

/// Errors callers branch on (everything else is plain anyhow).
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("not an ISO 9660 image (no CD001 volume descriptor at offset 32768)")]
    NotIso,
    #[error("ISO image is truncated: the volume is {need} bytes but the file has {have}")]
    Truncated { need: u64, have: u64 },
}

/// A file or directory found on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The primary name, version suffix (`;1`) and trailing dot removed.
    pub name: String,
    /// Byte offset of the extent in the image (LBA × 2048).
    pub offset: u64,
    pub length: u64,
    pub is_dir: bool,
}

/// What the Primary Volume Descriptor says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub volume_id: String,
    /// Size of the volume in bytes (volume space size × logical block size).
    pub size: u64,
    pub root: Entry,
}

/// Parse a Primary Volume Descriptor sector (type 1, `CD001`).
pub fn parse_pvd(sector: &[u8]) -> Result<Volume> {
    ensure!(sector.len() >= 2048, "short volume descriptor");
    ensure!(
        sector[0] == 1 && &sector[1..6] == b"CD001",
        "not a primary volume descriptor"
    );
    let volume_id = String::from_utf8_lossy(&sector[40..72])
        .trim_end_matches([' ', '\0'])
        .to_string();
    let blocks = u32::from_le_bytes(sector[80..84].try_into().unwrap()) as u64;
    let block_size = u16::from_le_bytes(sector[128..130].try_into().unwrap()) as u64;
    ensure!(
        block_size == SECTOR,
        "unsupported logical block size {block_size} (only 2048 is supported)"
    );
    let mut root = parse_dir_records(&sector[156..190])?
        .into_iter()
        .next()
        .context("primary volume descriptor has no root directory record")?;
    ensure!(root.is_dir, "root directory record is not a directory");
    root.name = String::new();
    Ok(Volume {
        volume_id,
        size: blocks * block_size,
        root,
    })
}

/// Parse the directory records in a directory extent. `.` and `..` are returned with
/// the names `"\0"` and `"\u{1}"` so callers can skip them; records never cross sector
/// boundaries, and a zero length byte means "continue at the next sector".
pub fn parse_dir_records(extent: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < extent.len() {
        let len = extent[pos] as usize;
        if len == 0 {
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        ensure!(
            len >= 34 && pos + len <= extent.len(),
            "corrupt directory record at offset {pos} (length {len})"
        );
        let rec = &extent[pos..pos + len];
        let lba = u32::from_le_bytes(rec[2..6].try_into().unwrap()) as u64;
        let length = u32::from_le_bytes(rec[10..14].try_into().unwrap()) as u64;
        let flags = rec[25];
        let name_len = rec[32] as usize;
        ensure!(
            33 + name_len <= len,
            "corrupt directory record name at offset {pos}"
        );
        let raw = &rec[33..33 + name_len];
        let name = match raw {
            [0] => "\0".to_string(),
            [1] => "\u{1}".to_string(),
            _ => clean_name(raw),
        };
        out.push(Entry {
            name,
            offset: lba * SECTOR,
            length,
            is_dir: flags & 2 != 0,
        });
        pos += len;
    }
    Ok(out)
}

fn clean_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = match s.rfind(';') {
        Some(i) if s[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &s[..i],
        _ => &s[..],
    };
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// The ISO 9660 level-1 form of a long name (`igninfo.json` → `IGNINFO.JSO`), which is
/// how mastering tools store names in the primary directory when Rock Ridge carries the
/// long ones.
pub fn level1_name(name: &str) -> String {
    let map = |s: &str, n: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .take(n)
            .collect()
    };
    match name.rsplit_once('.') {
        Some((base, ext)) if !base.is_empty() => {
            let ext = map(ext, 3);
            if ext.is_empty() {
                map(base, 8)
            } else {
                format!("{}.{}", map(base, 8), ext)
            }
        }
        _ => map(name, 8),
    }
}

/// An open ISO 9660 volume.
pub struct IsoFs<R> {
    reader: R,
    volume: Volume,
    file_len: u64,
}

impl<R: Read + Seek> IsoFs<R> {
    pub fn new(mut reader: R) -> Result<Self> {
        let file_len = reader
            .seek(SeekFrom::End(0))
            .context("seeking to end of image")?;
        let mut sector = vec![0u8; SECTOR as usize];
        let mut lba = DESCRIPTOR_START;
        let volume = loop {
            if (lba + 1) * SECTOR > file_len {
                bail!(IsoError::NotIso);
            }
            reader.seek(SeekFrom::Start(lba * SECTOR))?;
            reader
                .read_exact(&mut sector)
                .context("reading volume descriptor")?;
            if &sector[1..6] != b"CD001" {
                bail!(IsoError::NotIso);
            }
            match sector[0] {
                1 => break parse_pvd(&sector).context("parsing primary volume descriptor")?,
                255 => bail!("ISO image has no primary volume descriptor"),
                _ if lba > DESCRIPTOR_START + 64 => bail!(IsoError::NotIso),
                _ => lba += 1,
            }
        };
        if volume.size > file_len {
            bail!(IsoError::Truncated {
                need: volume.size,
                have: file_len
            });
        }
        Ok(IsoFs {
            reader,
            volume,
            file_len,
        })
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The entries of a directory, without `.` and `..`.
    pub fn list(&mut self, dir: &Entry) -> Result<Vec<Entry>> {
        ensure!(dir.is_dir, "{} is not a directory", dir.name);
        ensure!(
            dir.length <= MAX_DIR_LEN as u64,
            "directory {} is implausibly large ({} bytes)",
            dir.name,
            dir.length
        );
        ensure!(
            dir.offset
                .checked_add(dir.length)
                .is_some_and(|end| end <= self.file_len),
            "directory {} lies beyond the end of the image",
            dir.name
        );
        let mut buf = vec![0u8; dir.length as usize];
        self.reader.seek(SeekFrom::Start(dir.offset))?;
        self.reader
            .read_exact(&mut buf)
            .with_context(|| format!("reading directory {}", dir.name))?;
        let mut entries =
            parse_dir_records(&buf).with_context(|| format!("parsing directory {}", dir.name))?;
        entries.retain(|e| e.name != "\0" && e.name != "\u{1}");
        Ok(entries)
    }

    /// Look a path up, `/`-separated, case-insensitively; each component matches either
    /// the stored name or its level-1 form, so both `COREOS/IGNINFO.JSO` and
    /// `coreos/igninfo.json` work. `Ok(None)` if any component is missing.
    pub fn lookup(&mut self, path: &str) -> Result<Option<Entry>> {
        let mut cur = self.volume.root.clone();
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !cur.is_dir {
                return Ok(None);
            }
            let upper = comp.to_ascii_uppercase();
            let short = level1_name(comp);
            let entries = self.list(&cur)?;
            let found = entries
                .iter()
                .find(|e| e.name.to_ascii_uppercase() == upper)
                .or_else(|| entries.iter().find(|e| e.name == short));
            match found {
                Some(e) => cur = e.clone(),
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Read a (small) file whole.
    pub fn read(&mut self, entry: &Entry, limit: u64) -> Result<Vec<u8>> {
        ensure!(!entry.is_dir, "{} is a directory", entry.name);
        ensure!(
            entry.length <= limit,
            "{} is larger than expected ({} bytes, at most {limit})",
            entry.name,
            entry.length
        );
        self.read_at(entry.offset, entry.length as usize)
            .with_context(|| format!("reading {}", entry.name))
    }

    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        ensure!(
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.file_len),
            "{len} bytes at offset {offset} lie beyond the end of the image ({} bytes)",
            self.file_len
        );
        let mut buf = vec![0u8; len];
        self.reader.seek(SeekFrom::Start(offset))?;
        self.reader.read_exact(&mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &[u8], lba: u32, len: u32, dir: bool) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[32] = name.len() as u8;
        r.extend_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    #[test]
    fn names_are_cleaned() {
        let cases = [
            ("IGNINFO.JSO;1", "IGNINFO.JSO"),
            ("VMLINUZ.;1", "VMLINUZ"),
            ("COREOS", "COREOS"),
            ("A;B", "A;B"),
            ("X.", "X"),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw.as_bytes()), want);
        }
    }

    #[test]
    fn level1_names() {
        let cases = [
            ("igninfo.json", "IGNINFO.JSO"),
            ("features.json", "FEATURES.JSO"),
            ("isolinux.cfg", "ISOLINUX.CFG"),
            ("vmlinuz", "VMLINUZ"),
            ("coreos-firstboot", "COREOS_F"),
            ("grub.cfg", "GRUB.CFG"),
        ];
        for (long, short) in cases {
            assert_eq!(level1_name(long), short);
        }
    }

    #[test]
    fn directory_records_skip_to_next_sector_on_zero() {
        let mut extent = Vec::new();
        extent.extend(record(&[0], 20, 4096, true));
        extent.extend(record(&[1], 18, 2048, true));
        extent.extend(record(b"A.TXT;1", 30, 5, false));
        extent.resize(2048, 0);
        extent.extend(record(b"SUB", 40, 2048, true));
        extent.resize(4096, 0);
        let entries = parse_dir_records(&extent).unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.offset, e.length, e.is_dir))
            .collect();
        assert_eq!(
            names,
            vec![
                ("\0", 20 * 2048, 4096, true),
                ("\u{1}", 18 * 2048, 2048, true),
                ("A.TXT", 30 * 2048, 5, false),
                ("SUB", 40 * 2048, 2048, true)
            ]
        );
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let mut extent = record(b"A", 1, 1, false);
        extent[0] = 200;
        assert!(parse_dir_records(&extent).is_err());
    }

    #[test]
    fn not_an_iso_and_truncated() {
        let err = IsoFs::new(std::io::Cursor::new(vec![0u8; 40000]))
            .err()
            .unwrap();
        assert!(matches!(
            err.downcast_ref::<IsoError>(),
            Some(IsoError::NotIso)
        ));
        let err = IsoFs::new(std::io::Cursor::new(vec![0u8; 100]))
            .err()
            .unwrap();
        assert!(matches!(
            err.downcast_ref::<IsoError>(),
            Some(IsoError::NotIso)
        ));

        // A minimal volume: PVD claiming 100 sectors, root dir at sector 18.
        let mut img = vec![0u8; 19 * 2048];
        let pvd = &mut img[16 * 2048..17 * 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[40..47].copy_from_slice(b"VOLNAME");
        pvd[47..72].fill(b' ');
        pvd[80..84].copy_from_slice(&100u32.to_le_bytes());
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        let root = record(&[0], 18, 2048, true);
        pvd[156..156 + root.len()].copy_from_slice(&root);
        img[17 * 2048] = 255;
        img[17 * 2048 + 1..17 * 2048 + 6].copy_from_slice(b"CD001");
        let err = IsoFs::new(std::io::Cursor::new(img.clone())).err().unwrap();
        assert_eq!(
            err.to_string(),
            "ISO image is truncated: the volume is 204800 bytes but the file has 38912"
        );
        img.resize(100 * 2048, 0);
        let mut dir = record(&[0], 18, 2048, true);
        dir.extend(record(&[1], 18, 2048, true));
        dir.extend(record(b"IGNINFO.JSO;1", 50, 3, false));
        img[18 * 2048..18 * 2048 + dir.len()].copy_from_slice(&dir);
        img[50 * 2048..50 * 2048 + 3].copy_from_slice(b"abc");
        let mut fs = IsoFs::new(std::io::Cursor::new(img)).unwrap();
        assert_eq!(fs.volume().volume_id, "VOLNAME");
        let e = fs.lookup("/igninfo.json").unwrap().unwrap();
        assert_eq!((e.offset, e.length), (50 * 2048, 3));
        assert_eq!(fs.read(&e, 10).unwrap(), b"abc");
        assert_eq!(fs.lookup("IGNINFO.JSO").unwrap(), Some(e));
        assert_eq!(fs.lookup("nope/x").unwrap(), None);
    }
}
