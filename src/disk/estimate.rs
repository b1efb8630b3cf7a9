//! How much a layer unpacks to, read from the compressed blob's own metadata wherever the
//! format records it, so the root filesystem can be sized (and created) before the deploy.
//!
//! - gzip: the trailer's ISIZE (RFC 1952: last 4 bytes, little-endian, uncompressed length
//!   mod 2^32). It only describes the *last* member and wraps at 4 GiB, so it is trusted
//!   only when it is plausible: at least 90% of the compressed length (deflate never grows
//!   data by more than a few bytes per 64 KiB block, so a smaller value means a wrap or a
//!   multi-member file) and the blob is below 512 MiB (a wrap would need a ratio above 8).
//!   Otherwise the stream is decompressed and counted.
//! - zstd: the sum of every frame's Frame_Content_Size (RFC 8878), walking frame and block
//!   headers only; a frame without one means counting by decompression.
//! - anything else is taken as an uncompressed tar: its length.
//!
//! The format is sniffed from the magic bytes, not trusted from the media type.

use std::io::{self, Read, Seek, SeekFrom};

use anyhow::{bail, Context, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const ZSTD_SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;
/// Above this compressed size a gzip ISIZE could have wrapped at a plausible ratio.
const GZIP_TRUST_BELOW: u64 = 512 << 20;

/// Uncompressed size of one layer blob of `len` bytes.
pub fn layer_size<R: Read + Seek>(blob: &mut R, len: u64) -> Result<u64> {
    let mut magic = [0u8; 4];
    blob.seek(SeekFrom::Start(0))?;
    let n = read_up_to(blob, &mut magic)?;
    if n >= 2 && magic[..2] == GZIP_MAGIC {
        if len >= 18 {
            let mut trailer = [0u8; 4];
            blob.seek(SeekFrom::Start(len - 4))?;
            blob.read_exact(&mut trailer)?;
            if let Some(size) = gzip_size_from_trailer(u32::from_le_bytes(trailer), len) {
                return Ok(size);
            }
        }
        blob.seek(SeekFrom::Start(0))?;
        return count(flate2::read::MultiGzDecoder::new(blob))
            .context("decompressing a gzip layer to measure it");
    }
    if n == 4 && u32::from_le_bytes(magic) == ZSTD_MAGIC {
        if let Some(size) = zstd_content_size(blob, len)? {
            return Ok(size);
        }
        blob.seek(SeekFrom::Start(0))?;
        return count(zstd::stream::read::Decoder::new(blob)?)
            .context("decompressing a zstd layer to measure it");
    }
    Ok(len)
}

/// The gzip ISIZE when it can be trusted for a blob of `len` bytes (see the module docs).
pub fn gzip_size_from_trailer(isize: u32, len: u64) -> Option<u64> {
    let isize = u64::from(isize);
    (len < GZIP_TRUST_BELOW && isize >= len / 10 * 9).then_some(isize)
}

/// Sum of the frames' content sizes, `None` when a frame does not record its size.
pub fn zstd_content_size<R: Read + Seek>(blob: &mut R, len: u64) -> Result<Option<u64>> {
    let mut pos = 0u64;
    let mut total = 0u64;
    while pos < len {
        blob.seek(SeekFrom::Start(pos))?;
        let mut magic = [0u8; 4];
        blob.read_exact(&mut magic)
            .context("truncated zstd frame")?;
        let magic = u32::from_le_bytes(magic);
        if ZSTD_SKIPPABLE.contains(&magic) {
            let mut size = [0u8; 4];
            blob.read_exact(&mut size)?;
            pos += 8 + u64::from(u32::from_le_bytes(size));
            continue;
        }
        if magic != ZSTD_MAGIC {
            bail!("not a zstd frame at offset {pos}");
        }
        let mut fhd = [0u8; 1];
        blob.read_exact(&mut fhd)?;
        let fhd = fhd[0];
        let fcs_flag = fhd >> 6;
        let single_segment = fhd & 0x20 != 0;
        let has_checksum = fhd & 0x04 != 0;
        let dict_len = [0u64, 1, 2, 4][usize::from(fhd & 3)];
        let window_len = u64::from(!single_segment);
        let fcs_len = match (fcs_flag, single_segment) {
            (0, false) => return Ok(None),
            (0, true) => 1,
            (1, _) => 2,
            (2, _) => 4,
            _ => 8,
        };
        blob.seek(SeekFrom::Current((window_len + dict_len) as i64))?;
        let mut fcs = [0u8; 8];
        blob.read_exact(&mut fcs[..fcs_len])?;
        let mut size = u64::from_le_bytes(fcs);
        if fcs_len == 2 {
            size += 256;
        }
        total += size;
        pos += 4 + 1 + window_len + dict_len + fcs_len as u64;
        loop {
            blob.seek(SeekFrom::Start(pos))?;
            let mut bh = [0u8; 4];
            blob.read_exact(&mut bh[..3])
                .context("truncated zstd block header")?;
            let bh = u32::from_le_bytes(bh);
            let last = bh & 1 != 0;
            let block_size = u64::from(bh >> 3);
            pos += 3 + match (bh >> 1) & 3 {
                1 => 1, // RLE: one byte repeated block_size times
                3 => bail!("reserved zstd block type at offset {pos}"),
                _ => block_size,
            };
            if last {
                break;
            }
        }
        if has_checksum {
            pos += 4;
        }
    }
    Ok(Some(total))
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn count<R: Read>(mut r: R) -> Result<u64> {
    Ok(io::copy(&mut r, &mut io::sink())?)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn sizes_from_metadata_or_by_counting() {
        // Compressible, like a tar of an OS, and incompressible, like a tar of blobs.
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let random: Vec<u8> = (0..200_000u64)
            .map(|i| {
                (i.wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 56) as u8
            })
            .collect();
        let mut multi = gzip(&text);
        multi.extend(gzip(b"tiny last member"));
        let zstd_sized = zstd::bulk::compress(&text, 3).unwrap();
        let mut zstd_two_frames = zstd::bulk::compress(&text, 3).unwrap();
        // A skippable frame between them, as zstd:chunked writes.
        zstd_two_frames.extend([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        zstd_two_frames.extend(zstd::bulk::compress(&random, 3).unwrap());
        // The streaming encoder does not know the size up front: no content size recorded.
        let zstd_unsized = zstd::stream::encode_all(Cursor::new(&random), 3).unwrap();
        let cases: Vec<(&str, Vec<u8>, u64)> = vec![
            ("gzip text", gzip(&text), text.len() as u64),
            ("gzip random", gzip(&random), random.len() as u64),
            ("gzip empty", gzip(b""), 0),
            ("gzip multi-member", multi, text.len() as u64 + 16),
            ("zstd with content size", zstd_sized, text.len() as u64),
            (
                "zstd frames and a skippable frame",
                zstd_two_frames,
                (text.len() + random.len()) as u64,
            ),
            (
                "zstd without content size",
                zstd_unsized,
                random.len() as u64,
            ),
            ("plain tar", text.clone(), text.len() as u64),
            ("empty", vec![], 0),
        ];
        for (name, blob, want) in cases {
            let len = blob.len() as u64;
            assert_eq!(
                layer_size(&mut Cursor::new(blob), len).unwrap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn gzip_trailer_is_trusted_only_when_plausible() {
        let cases: &[(u32, u64, Option<u64>)] = &[
            (875_819_008, 321_853_043, Some(875_819_008)),
            (1000, 1000, Some(1000)),
            (899, 1000, None), // smaller than deflate can make it: wrapped or multi-member
            (10, 300 << 20, None), // wrapped at 4 GiB
            (u32::MAX, 600 << 20, None), // large blob: a wrap is plausible
            (3 << 30, (512 << 20) - 1, Some(3 << 30)),
        ];
        for &(isize, len, want) in cases {
            assert_eq!(
                gzip_size_from_trailer(isize, len),
                want,
                "isize {isize} len {len}"
            );
        }
    }
}
