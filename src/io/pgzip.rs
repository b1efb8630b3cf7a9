//! A gzip writer that compresses on every core and still produces one ordinary gzip
//! member, readable by any decoder (also those that stop after the first member).
//!
//! The input is cut into chunks; each is deflated independently by a worker and ended
//! with a sync flush (an empty stored block, so it ends on a byte boundary), the last one
//! with a final block. Deflate blocks are self-delimiting and no back-reference crosses a
//! chunk, so the concatenation is one valid deflate stream. The CRC-32 of the whole input
//! is combined from the chunks' CRCs. Chunks of 1 MiB cost a few bytes of flush each and a
//! fraction of a percent of ratio (no shared dictionary across chunks).
//!
//! Deflate is zlib-rs's (zlib-ng's algorithms): at level 1 it uses the "quick" strategy,
//! 2.5x faster than zlib's level 1 for output about 15% larger (measured on a qcow2 disk).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use zlib_rs::{DeflateFlush, Status};

const CHUNK: usize = 1 << 20;
/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS = Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

struct Job {
    index: u64,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    index: u64,
    deflated: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
}

pub struct ParallelGzWriter<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    /// Finished chunks waiting for their predecessors.
    pending: BTreeMap<u64, Done>,
    next_to_send: u64,
    next_to_write: u64,
    max_in_flight: u64,
    crc: crc32fast::Hasher,
    total: u64,
}

fn deflate_chunk(data: &[u8], level: i32, last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = zlib_rs::Deflate::new(level, false, 15);
    let flush = if last {
        DeflateFlush::Finish
    } else {
        DeflateFlush::SyncFlush
    };
    // The bound holds the whole chunk plus the flush, so one call finishes it.
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
    let status = deflate
        .compress(data, &mut out, flush)
        .map_err(|e| io::Error::other(e.as_str()))?;
    let complete =
        deflate.total_in() == data.len() as u64 && (!last || status == Status::StreamEnd);
    if !complete {
        return Err(io::Error::other(format!(
            "deflate stopped early ({status:?}, {} of {} bytes in)",
            deflate.total_in(),
            data.len()
        )));
    }
    out.truncate(deflate.total_out() as usize);
    Ok(out)
}

impl<W: Write> ParallelGzWriter<W> {
    /// `threads` workers (at least one) at `level` (0-9); writes the gzip header.
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        let threads = threads.max(1);
        let level = level.min(9) as i32;
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(threads);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let jobs_rx = Arc::clone(&jobs_rx);
                let done_tx: Sender<Done> = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match jobs_rx.lock().expect("job queue lock").recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(&job.data);
                    let deflated = deflate_chunk(&job.data, level, job.last);
                    if done_tx
                        .send(Done {
                            index: job.index,
                            deflated,
                            crc,
                        })
                        .is_err()
                    {
                        return;
                    }
                })
            })
            .collect();
        Ok(ParallelGzWriter {
            inner: Some(inner),
            buf: Vec::with_capacity(CHUNK),
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            pending: BTreeMap::new(),
            next_to_send: 0,
            next_to_write: 0,
            max_in_flight: 2 * threads as u64,
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    fn inner(&mut self) -> &mut W {
        self.inner.as_mut().expect("writer used after finish")
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(if last { 0 } else { CHUNK }),
        );
        let job = Job {
            index: self.next_to_send,
            data,
            last,
        };
        self.next_to_send += 1;
        self.jobs
            .as_ref()
            .expect("writer used after finish")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker stopped"))
    }

    /// Write out finished chunks in order; block while more than `keep` are in flight.
    fn drain(&mut self, keep: u64) -> io::Result<()> {
        loop {
            while let Ok(d) = self.done.try_recv() {
                self.pending.insert(d.index, d);
            }
            while let Some(d) = self.pending.remove(&self.next_to_write) {
                let bytes = d.deflated?;
                self.inner().write_all(&bytes)?;
                self.crc.combine(&d.crc);
                self.next_to_write += 1;
            }
            if self.next_to_send - self.next_to_write <= keep {
                return Ok(());
            }
            let d = self
                .done
                .recv()
                .map_err(|_| io::Error::other("gzip worker stopped"))?;
            self.pending.insert(d.index, d);
        }
    }

    /// Compress what is left, write the gzip trailer, and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send(true)?;
        self.drain(0)?;
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let total = self.total;
        let w = self.inner();
        w.write_all(&crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        w.write_all(&(total as u32).to_le_bytes())?;
        w.flush()?;
        Ok(self.inner.take().expect("inner writer"))
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total += n as u64;
        if self.buf.len() == CHUNK {
            self.send(false)?;
            self.drain(self.max_in_flight)?;
        }
        Ok(n)
    }

    /// Chunks are independent: there is nothing to flush early without costing ratio.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        // Closing the queue stops the workers; wait so no thread outlives the writer.
        self.jobs.take();
        while self.done.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn inputs() -> Vec<Vec<u8>> {
        let noise: Vec<u8> = (0..3 * CHUNK as u32 + 12_345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        vec![
            Vec::new(),
            b"hello gzip".to_vec(),
            vec![0u8; CHUNK],
            b"layerboot ".repeat(400_000),
            noise,
        ]
    }

    #[test]
    fn output_is_one_gzip_member_that_decodes_to_the_input() {
        for data in inputs() {
            for threads in [1, 3] {
                let mut w = ParallelGzWriter::new(Vec::new(), 6, threads).unwrap();
                // Odd-sized writes, so chunk boundaries fall inside writes.
                for piece in data.chunks(100_003) {
                    w.write_all(piece).unwrap();
                }
                let gz = w.finish().unwrap();
                // GzDecoder reads exactly one member: it must hold everything.
                let mut back = Vec::new();
                let mut dec = flate2::read::GzDecoder::new(&gz[..]);
                dec.read_to_end(&mut back).unwrap();
                assert_eq!(back.len(), data.len(), "{threads} threads");
                assert!(back == data, "{threads} threads: content differs");
                assert_eq!(&gz[gz.len() - 4..], &(data.len() as u32).to_le_bytes());
            }
        }
    }

    #[test]
    fn system_gzip_accepts_the_output() {
        let data = b"0123456789abcdef".repeat(300_000);
        let mut w = ParallelGzWriter::new(Vec::new(), 1, 2).unwrap();
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data);
        assert!(
            gz.len() < data.len() / 20,
            "compressible input was not compressed: {} bytes",
            gz.len()
        );
    }
}
