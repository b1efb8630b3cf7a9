//! xz compression for embed payloads, with an allocator that backs liblzma's big
//! tables with transparent huge pages.
//!
//! The payload must be preset 9 (byte-identical to coreos-installer's). A preset-9 encoder
//! zeroes a 64 MiB match-finder hash table before it reads a byte; with 4 KiB pages that is
//! ~16 000 page faults, most of the time of an in-place `iso customize` of a few KiB of
//! Ignition. Mapping large allocations with MADV_HUGEPAGE turns them into ~32 faults. The
//! compressed bytes are the same: only where the encoder's memory comes from changes.

// liblzma's C allocator hooks and stream calls have no safe binding here.
#![allow(unsafe_code)]

use std::ffi::c_void;

use anyhow::{bail, Result};
use lzma_sys as lz;

/// Allocations at least this big get their own mapping (the hash table and the binary-tree
/// array; small state goes through malloc).
const MAPPED_MIN: usize = 1 << 20;
const HUGE_PAGE: usize = 2 << 20;
/// Header before every block we hand out: kind and mapping length. 16 bytes keeps malloc's
/// 16-byte alignment for the caller.
const HEADER: usize = 16;
const KIND_MALLOC: usize = 1;
const KIND_MAPPED: usize = 2;

extern "C" fn alloc(_opaque: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    let Some(len) = nmemb.checked_mul(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: plain libc allocation calls; every pointer written to is inside the block
    // just obtained, which is at least HEADER bytes before the returned pointer.
    unsafe {
        if len < MAPPED_MIN {
            let base = libc::malloc(len + HEADER) as *mut usize;
            if base.is_null() {
                return std::ptr::null_mut();
            }
            *base = KIND_MALLOC;
            return (base as *mut u8).add(HEADER) as *mut c_void;
        }
        // One page for the header keeps the block page-aligned.
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let Some(map_len) = len.checked_add(page) else {
            return std::ptr::null_mut();
        };
        let base = libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        if map_len >= HUGE_PAGE {
            // Advice only: without THP the mapping simply keeps 4 KiB pages.
            libc::madvise(base, map_len, libc::MADV_HUGEPAGE);
        }
        let block = (base as *mut u8).add(page);
        let header = block.sub(HEADER) as *mut usize;
        *header = KIND_MAPPED;
        *header.add(1) = map_len;
        block as *mut c_void
    }
}

extern "C" fn free(_opaque: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: `ptr` came from `alloc` above, so a valid header precedes it.
    unsafe {
        let header = (ptr as *mut u8).sub(HEADER) as *mut usize;
        match *header {
            KIND_MALLOC => libc::free(header as *mut c_void),
            KIND_MAPPED => {
                let map_len = *header.add(1);
                let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
                libc::munmap((ptr as *mut u8).sub(page) as *mut c_void, map_len);
            }
            _ => unreachable!("block not allocated by the xz allocator"),
        }
    }
}

/// An .xz writer over a `Vec<u8>` with a CRC32 check, on the huge-page allocator. Same
/// semantics as `xz2::write::XzEncoder`: `flush()` is a full flush (ends the block), which
/// the payload format depends on for byte identity.
pub struct XzVecWriter {
    strm: lz::lzma_stream,
    // Boxed: liblzma keeps the pointer for the stream's whole life.
    _allocator: Box<lz::lzma_allocator>,
    out: Vec<u8>,
}

impl XzVecWriter {
    pub fn new(preset: u32) -> Result<Self> {
        let allocator = Box::new(lz::lzma_allocator {
            alloc: Some(alloc),
            free: Some(free),
            opaque: std::ptr::null_mut(),
        });
        // SAFETY: the all-zero lzma_stream is LZMA_STREAM_INIT; the allocator box outlives
        // the stream (dropped after lzma_end in Drop).
        let mut strm: lz::lzma_stream = unsafe { std::mem::zeroed() };
        strm.allocator = &*allocator;
        let ret = unsafe { lz::lzma_easy_encoder(&mut strm, preset, lz::LZMA_CHECK_CRC32) };
        let w = XzVecWriter {
            strm,
            _allocator: allocator,
            out: Vec::with_capacity(64 << 10),
        };
        if ret != lz::LZMA_OK {
            bail!("creating the xz encoder (preset {preset}) failed: liblzma error {ret}");
        }
        Ok(w)
    }

    /// Run liblzma over `input` with `action` until it has taken all of it and, for flush
    /// and finish, until it reports the end of that operation.
    fn code(&mut self, input: &[u8], action: lz::lzma_action) -> std::io::Result<()> {
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = input.len();
        loop {
            if self.out.len() == self.out.capacity() {
                self.out.reserve(self.out.capacity().max(64 << 10));
            }
            let used = self.out.len();
            // SAFETY: next_out/avail_out describe the spare capacity of `out`; liblzma writes
            // at most avail_out bytes there, and set_len counts exactly what it wrote.
            let ret = unsafe {
                self.strm.next_out = self.out.as_mut_ptr().add(used);
                self.strm.avail_out = self.out.capacity() - used;
                let ret = lz::lzma_code(&mut self.strm, action);
                self.out.set_len(self.out.capacity() - self.strm.avail_out);
                ret
            };
            match ret {
                lz::LZMA_STREAM_END => return Ok(()),
                lz::LZMA_OK if action == lz::LZMA_RUN && self.strm.avail_in == 0 => return Ok(()),
                lz::LZMA_OK => {}
                e => {
                    return Err(std::io::Error::other(format!(
                        "xz compression failed: liblzma error {e}"
                    )))
                }
            }
        }
    }

    /// End the stream and return the compressed bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.code(&[], lz::LZMA_FINISH)?;
        Ok(std::mem::take(&mut self.out))
    }
}

impl std::io::Write for XzVecWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.code(buf, lz::LZMA_RUN)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.code(&[], lz::LZMA_FULL_FLUSH)
    }
}

impl Drop for XzVecWriter {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized (or is LZMA_STREAM_INIT, which lzma_end accepts).
        unsafe { lz::lzma_end(&mut self.strm) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn output_equals_the_standard_encoder_and_round_trips() {
        let texts: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{\"ignition\":{\"version\":\"3.3.0\"}}".to_vec(),
            (0..300_000u32)
                .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes())
                .collect(),
            b"abcabcabc".repeat(100_000),
        ];
        for data in texts {
            // Same writes and flushes into both: the bytes must be the same.
            let mut ours = XzVecWriter::new(9).unwrap();
            let mut reference = xz2::write::XzEncoder::new_stream(
                Vec::new(),
                xz2::stream::Stream::new_easy_encoder(9, xz2::stream::Check::Crc32).unwrap(),
            );
            let half = data.len() / 2;
            for w in [&mut ours as &mut dyn Write, &mut reference] {
                w.write_all(&data[..half]).unwrap();
                w.flush().unwrap();
                w.write_all(&data[half..]).unwrap();
            }
            let ours = ours.finish().unwrap();
            assert_eq!(ours, reference.finish().unwrap(), "{} bytes", data.len());
            let mut back = Vec::new();
            xz2::read::XzDecoder::new(&ours[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
            // CRC32 check flag in the stream header (the kernel accepts only CRC32 or none).
            assert_eq!(ours[7], 0x01);
        }
    }

    #[test]
    fn bad_preset_is_an_error() {
        assert!(XzVecWriter::new(42)
            .err()
            .unwrap()
            .to_string()
            .contains("preset 42"));
    }
}
