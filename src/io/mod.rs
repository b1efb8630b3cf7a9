//! Streaming I/O adapters: atomic output files, hashing while copying, progress.

mod atomic;
mod hashing;
mod pgzip;

pub use atomic::{check_output, open_rw, write_atomic, AtomicFile, ORDINARY_MODE, SECRET_MODE};
pub use hashing::{sha256_file, sha256_reader, HashingReader, HashingWriter};
pub use pgzip::ParallelGzWriter;
