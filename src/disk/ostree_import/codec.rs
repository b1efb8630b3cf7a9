//! The layer blob read once: hashed against its digest while it is decompressed.

use std::fs::File;
use std::io::{self, Read};

use crate::io::{GzipReader, HashingReader};

/// The decompressed tar stream over a hashing blob reader, and how to finish both.
pub(super) enum Decoder {
    Gzip(GzipReader<HashingReader<File>>),
    Zstd(zstd::stream::read::Decoder<'static, io::BufReader<HashingReader<File>>>),
    Plain(HashingReader<File>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

impl Decoder {
    /// Read the compressed stream to its end (checking its trailer) and the blob to its
    /// end; returns the blob's sha256 and size.
    pub(super) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let mut blob = match self {
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
            Decoder::Plain(r) => r,
        };
        io::copy(&mut blob, &mut io::sink())?;
        Ok(blob.finish())
    }
}
