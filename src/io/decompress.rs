//! What compression a stream uses, and a reader that undoes it: the one answer to "what
//! compression is this?" for layer blobs, disk images and the like.

use std::io::{self, BufRead, Read};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    Uncompressed,
}

impl Compression {
    /// By the stream's first bytes (six suffice); anything unrecognized is taken as
    /// uncompressed.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::Uncompressed
        }
    }

    /// By an OCI or Docker layer media type; `None`: not a layer media type.
    pub fn of_layer_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::Uncompressed),
            _ => None,
        }
    }
}

/// `r` decompressed as its first bytes say (all members of a gzip or xz stream).
pub fn decompressed<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(match Compression::sniff(head) {
        Compression::Gzip => Box::new(GzipReader::all_members(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r)),
        Compression::Uncompressed => Box::new(r),
    })
}

/// A gzip reader over zlib-rs, about twice the speed of the system zlib flate2 is bound to
/// here (ostree-ext enables flate2's "zlib" feature).
pub struct GzipReader<R> {
    inner: R,
    inflate: zlib_rs::Inflate,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    done: bool,
    all_members: bool,
}

impl<R: Read> GzipReader<R> {
    /// Reads the first member only, as ostree-ext's layer reader does; what follows it is
    /// left unread (see [`Self::into_inner`]).
    pub fn first_member(inner: R) -> Self {
        Self::new(inner, false)
    }

    /// Reads member after member to the end of `inner`, as `gzip -d` does.
    pub fn all_members(inner: R) -> Self {
        Self::new(inner, true)
    }

    fn new(inner: R, all_members: bool) -> Self {
        GzipReader {
            inner,
            inflate: gzip_inflate(),
            buf: vec![0; 256 << 10].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            done: false,
            all_members,
        }
    }

    /// The underlying reader. Input read ahead past the end of the member is lost, so use
    /// it only to read on to the end (for a hash or a size), not to parse what follows.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.pos == self.len && !self.eof {
            self.len = self.inner.read(&mut self.buf)?;
            self.pos = 0;
            self.eof = self.len == 0;
        }
        Ok(())
    }

    /// After a member's end: is another member there?
    fn next_member(&mut self) -> io::Result<bool> {
        self.refill()?;
        if self.pos == self.len {
            return Ok(false);
        }
        self.inflate = gzip_inflate();
        Ok(true)
    }
}

fn gzip_inflate() -> zlib_rs::Inflate {
    // 16 + 15: a gzip header and trailer around a deflate stream with a 32 KiB window.
    zlib_rs::Inflate::new(true, 16 + 15)
}

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        loop {
            self.refill()?;
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(
                    &self.buf[self.pos..self.len],
                    out,
                    zlib_rs::InflateFlush::NoFlush,
                )
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("corrupt gzip stream: {}", e.as_str()),
                    )
                })?;
            let consumed = (self.inflate.total_in() - in0) as usize;
            let produced = (self.inflate.total_out() - out0) as usize;
            self.pos += consumed;
            if status == zlib_rs::Status::StreamEnd {
                self.done = !(self.all_members && self.next_member()?);
            }
            if produced > 0 || self.done {
                return Ok(produced);
            }
            if self.eof && self.pos == self.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gzip stream truncated",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(r: impl Read) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        let mut r = r;
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn sniffs_each_kind_by_magic() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
            (b"\xfd7zXZ\0\0", Compression::Xz),
            (b"ustar", Compression::Uncompressed),
            (&[0x1f], Compression::Uncompressed),
            (b"", Compression::Uncompressed),
        ];
        for (head, want) in cases {
            assert_eq!(Compression::sniff(head), *want, "{head:?}");
        }
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            Compression::of_layer_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::of_layer_media_type("application/vnd.docker.image.rootfs.diff.tar"),
            Some(Compression::Uncompressed)
        );
        assert_eq!(
            Compression::of_layer_media_type("application/vnd.oci.image.layer.v1.tar+xz"),
            None
        );
        assert_eq!(
            Compression::of_layer_media_type("application/vnd.oci.image.config.v1+json"),
            None
        );
    }

    #[test]
    fn decompressed_undoes_each_kind() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(&data[..], 1)
            .read_to_end(&mut xz)
            .unwrap();
        for (name, blob) in [
            ("gzip", gzip(&data)),
            ("zstd", zst),
            ("xz", xz),
            ("plain", data.clone()),
        ] {
            let got = read_all(decompressed(io::BufReader::new(&blob[..])).unwrap()).unwrap();
            assert!(got == data, "{name}: {} bytes back", got.len());
        }
    }

    #[test]
    fn gzip_members_first_or_all() {
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(
            read_all(GzipReader::all_members(&two[..])).unwrap(),
            b"first second"
        );
        assert_eq!(
            read_all(GzipReader::first_member(&two[..])).unwrap(),
            b"first "
        );
    }

    #[test]
    fn gzip_damage_is_an_error() {
        let whole = gzip(&[7u8; 100_000]);
        let truncated = &whole[..whole.len() / 2];
        let e = read_all(GzipReader::all_members(truncated)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        let mut corrupt = whole.clone();
        corrupt[12] ^= 0xff;
        corrupt[13] ^= 0xff;
        assert!(read_all(GzipReader::all_members(&corrupt[..])).is_err());
        let mut bad_crc = whole;
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let e = read_all(GzipReader::all_members(&bad_crc[..])).unwrap_err();
        assert!(e.to_string().contains("corrupt gzip"), "{e}");
    }
}
