//! Streaming I/O adapters: atomic output files, hashing while copying, progress.

mod atomic;
pub(crate) mod decompress;
mod hashing;
pub mod newc;
mod pgzip;
pub(crate) mod rooted;
mod space;

pub use atomic::{check_output, open_rw, write_atomic, AtomicFile, ORDINARY_MODE, SECRET_MODE};
pub use decompress::{decompressed, Compression, GzipReader};
pub use hashing::{sha256_file, sha256_reader, HashingReader, HashingWriter};
pub use pgzip::ParallelGzWriter;
pub use rooted::RootedDir;
pub use space::free_bytes;
