//! CA certificate bundles given by the user (`--ca`, `--ca-file`, `additionalTrustBundle`).
//!
//! A bundle ends up trusted by Ignition or by every node of a cluster, so a wrong file must
//! fail here and not at first boot: every PEM block must be a certificate that parses as
//! X.509, at least one must be present, and a private key in the file is refused so that it
//! never lands in an Ignition config or an install-config.

use std::io::BufReader;

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::{self, SectionKind};
use rustls_pki_types::CertificateDer;

/// A validated PEM bundle: the user's bytes, kept as given, and how many certificates it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pem: Vec<u8>,
    count: usize,
}

impl CaBundle {
    /// Validate `bytes` as a PEM certificate bundle; `what` names the source in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<CaBundle> {
        let mut reader = BufReader::new(bytes);
        let mut count = 0;
        loop {
            let section = pem::from_buf(&mut reader)
                .map_err(|e| anyhow::anyhow!("{what}: invalid PEM: {}", describe_pem_error(&e)))?;
            let Some((kind, der)) = section else { break };
            match kind {
                SectionKind::Certificate => {
                    let cert = CertificateDer::from(der);
                    webpki::anchor_from_trusted_cert(&cert)
                        .map_err(|e| anyhow::anyhow!("{what}: PEM block {} is not a valid X.509 certificate ({e:?})", count + 1))?;
                    count += 1;
                }
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                    bail!("{what}: contains a private key; give only the CA certificate(s), the key must not be distributed")
                }
                other => bail!("{what}: contains a {other:?} PEM block where only CERTIFICATE blocks are expected"),
            }
        }
        if count == 0 {
            bail!(
                "{what}: no PEM certificate found (expected '-----BEGIN CERTIFICATE-----' blocks)"
            );
        }
        Ok(CaBundle {
            pem: bytes.to_vec(),
            count,
        })
    }

    /// Read and validate a bundle from a file.
    pub fn load(path: &std::path::Path) -> Result<CaBundle> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        CaBundle::parse(&bytes, &format!("CA file {}", path.display()))
    }

    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    pub fn as_str(&self) -> &str {
        // PEM is ASCII by construction: parse() accepted only base64 bodies and labels.
        std::str::from_utf8(&self.pem).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// The DER bodies of the CERTIFICATE blocks of PEM text, in order; other blocks, text
/// between blocks and anything after a malformed block are skipped. For bundles that are
/// not the user's to fix (the system's); a user's file goes through [`CaBundle::parse`].
pub fn certificates_der(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = BufReader::new(bytes);
    let mut out = Vec::new();
    while let Ok(Some((kind, der))) = pem::from_buf(&mut reader) {
        if kind == SectionKind::Certificate {
            out.push(der);
        }
    }
    out
}

fn describe_pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing '{}'", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line '{}'", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(m) => format!("bad base64 ({m})"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_CA: &[u8] = include_bytes!("../tests/golden/test-ca.crt");

    #[test]
    fn certificates_der_takes_certificate_blocks_only() {
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let bundle = [b"# comment\n".as_slice(), TEST_CA, b"junk\n", key, TEST_CA].concat();
        let ders = certificates_der(&bundle);
        assert_eq!(ders.len(), 2);
        assert_eq!(ders[0], ders[1]);
        // the DER is the certificate itself: it parses as X.509
        webpki::anchor_from_trusted_cert(&CertificateDer::from(ders[0].clone())).unwrap();
        assert!(certificates_der(b"no certs here").is_empty());
        // after a malformed block, nothing more is taken
        let broken = [TEST_CA, &TEST_CA[..TEST_CA.len() - 30], TEST_CA].concat();
        assert_eq!(certificates_der(&broken).len(), 1);
    }

    #[test]
    fn table() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBuB0jS8yz1SxmM2xR2TnU5YHoJJpV8fQ4nqS8mJGc2p\n-----END PRIVATE KEY-----\n";
        let not_a_cert =
            b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let truncated = &TEST_CA[..TEST_CA.len() - 30];
        let cases: &[(&[u8], Result<usize, &str>)] = &[
            (TEST_CA, Ok(1)),
            (&[TEST_CA, TEST_CA].concat(), Ok(2)),
            (b"", Err("no PEM certificate found")),
            (b"just some text\n", Err("no PEM certificate found")),
            (not_a_cert, Err("not a valid X.509 certificate")),
            (truncated, Err("invalid PEM")),
            (&[TEST_CA, key].concat(), Err("private key")),
        ];
        for (input, want) in cases {
            let got = CaBundle::parse(input, "CA file x.pem");
            match (got, want) {
                (Ok(b), Ok(n)) => assert_eq!(b.count(), *n),
                (Err(e), Err(msg)) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(msg) && e.starts_with("CA file x.pem"), "{e}");
                }
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        }
    }
}
