//! One connection to one registry repository: TLS and CA setup, authentication,
//! retries on transient failures, and readable errors from oci-client's.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use super::RegistryOptions;
use crate::oci::manifest::{Descriptor, ACCEPTED_MANIFEST_TYPES};
use crate::oci::reference::{Digest, RegistryRef};

/// An authenticated client for one repository.
pub struct Connection {
    client: oci_client::Client,
    auth: RegistryAuth,
    had_credentials: bool,
    /// The authfiles searched (for the message when they hold nothing for the registry).
    authfiles: Vec<PathBuf>,
    repo: RegistryRef,
    plain_http: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("repo", &self.repo.name())
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

/// PEM CA certificates to trust for `host`: `--ca-file`s, then the `*.crt` files of
/// `--cert-dir`, or without it of `/etc/containers/certs.d/HOST/` and
/// `/etc/docker/certs.d/HOST/` (the containers-certs.d(5) convention).
pub fn ca_certificates(opts: &RegistryOptions, host: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for f in &opts.ca_files {
        let pem =
            std::fs::read(f).with_context(|| format!("cannot read CA file {}", f.display()))?;
        check_pem(f, &pem)?;
        out.push((f.clone(), pem));
    }
    let dirs: Vec<PathBuf> = match &opts.cert_dir {
        Some(d) => {
            if !d.is_dir() {
                bail!(
                    "cert dir {} does not exist or is not a directory",
                    d.display()
                );
            }
            vec![d.clone()]
        }
        None => vec![
            Path::new("/etc/containers/certs.d").join(host),
            Path::new("/etc/docker/certs.d").join(host),
        ],
    };
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut crts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        crts.sort();
        for f in crts {
            let pem = std::fs::read(&f)
                .with_context(|| format!("cannot read CA file {}", f.display()))?;
            check_pem(&f, &pem)?;
            out.push((f, pem));
        }
    }
    Ok(out)
}

/// The one rule for CA files (see [`crate::cacert`]): oci-client would drop a file it
/// cannot use with a log line and connect without it.
fn check_pem(path: &Path, pem: &[u8]) -> Result<()> {
    crate::cacert::CaBundle::parse(pem, &format!("CA file {}", path.display())).map(drop)
}

/// The system CA bundle (Debian, Fedora/RHEL, or $SSL_CERT_FILE), if there is one.
fn system_bundle() -> Option<Vec<u8>> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        )
        .find_map(|p| std::fs::read(p).ok())
}

fn client_config(
    opts: &RegistryOptions,
    certs: &[(PathBuf, Vec<u8>)],
    plain_http: bool,
) -> ClientConfig {
    // One certificate per entry (reqwest reads one per call), as DER.
    let der = |data: Vec<u8>| Certificate {
        encoding: CertificateEncoding::Der,
        data,
    };
    let extra: Vec<Certificate> = certs
        .iter()
        .flat_map(|(_, p)| crate::cacert::certificates_der(p))
        .map(der)
        .collect();
    // With the system bundle plus the extra CAs as the only roots, rustls verifies
    // with webpki; the platform verifier would log its own error line beside ours.
    let (only, extra) = match system_bundle() {
        Some(bundle) => (
            crate::cacert::certificates_der(&bundle)
                .into_iter()
                .map(der)
                .chain(extra)
                .collect(),
            vec![],
        ),
        None => (vec![], extra),
    };
    ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: !opts.tls_verify,
        tls_certs_only: only,
        extra_root_certificates: extra,
        // We select platforms ourselves, with an error that names what is there.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        max_concurrent_download: opts.max_parallel,
        user_agent: concat!("layerboot/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    }
}

impl Connection {
    /// Connect and authenticate to `r`'s repository. With `tls_verify` off, a registry
    /// that does not speak TLS is retried over plain HTTP (podman's `--tls-verify=false`).
    pub async fn open(opts: &RegistryOptions, r: &RegistryRef) -> Result<Self> {
        let creds = opts.auth.credentials_for(r)?;
        let had_credentials = creds.is_some();
        let authfiles: Vec<PathBuf> = opts.auth.files().map(Path::to_path_buf).collect();
        let auth = creds
            .map(|c| c.to_registry_auth())
            .unwrap_or(RegistryAuth::Anonymous);
        let certs = ca_certificates(opts, &r.registry)?;
        let reference = r.to_oci_reference();
        let mut plain_http = false;
        let client = loop {
            let client = oci_client::Client::new(client_config(opts, &certs, plain_http));
            // The TLS probe of an insecure registry is tried once: a failure there
            // means "try plain HTTP", which then gets the retries.
            let probe_once = !opts.tls_verify && !plain_http;
            let attempt = if probe_once {
                client
                    .auth(&reference, &auth, RegistryOperation::Pull)
                    .await
            } else {
                retry(opts, || {
                    client.auth(&reference, &auth, RegistryOperation::Pull)
                })
                .await
            };
            match attempt {
                Ok(_) => break client,
                Err(OciDistributionError::RequestError(e))
                    if !opts.tls_verify && !plain_http && !e.is_status() =>
                {
                    log::info!("{}: no TLS answer ({e}); retrying over plain HTTP as --tls-verify=false allows", r.registry);
                    plain_http = true;
                }
                Err(e) => return Err(explain(e, r, had_credentials, &authfiles, &certs)),
            }
        };
        Ok(Connection {
            client,
            auth,
            had_credentials,
            authfiles,
            repo: r.clone(),
            plain_http,
        })
    }

    pub fn repo(&self) -> &RegistryRef {
        &self.repo
    }

    fn reference_for(&self, digest: Option<&Digest>) -> oci_client::Reference {
        match digest {
            Some(d) => self.repo.pinned(d).to_oci_reference(),
            None => self.repo.to_oci_reference(),
        }
    }

    /// Fetch a manifest by the repo's tag/digest or by `digest`; the body is checked
    /// against the digest it was asked by.
    pub async fn fetch_manifest(
        &self,
        opts: &RegistryOptions,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest)> {
        let reference = self.reference_for(digest.or(self.repo.digest.as_ref()));
        let (body, _) = retry(opts, || {
            self.client
                .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFEST_TYPES)
        })
        .await
        .map_err(|e| self.explain(e))?;
        let (hex, _) = crate::io::sha256_reader(&body[..])?;
        let got = Digest::from_sha256_hex(&hex).expect("sha256 hex");
        if let Some(want) = digest.or(self.repo.digest.as_ref()) {
            if &got != want {
                bail!(
                    "manifest {want} from {} does not match its digest (content is {got})",
                    self.repo.name()
                );
            }
        }
        Ok((body.to_vec(), got))
    }

    /// Fetch a small blob (a config) into memory, verified.
    pub async fn fetch_small_blob(
        &self,
        opts: &RegistryOptions,
        desc: &Descriptor,
    ) -> Result<Vec<u8>> {
        const MAX: u64 = 16 << 20;
        if desc.size > MAX {
            bail!(
                "blob {} is {} bytes, more than the {MAX} allowed for an image config",
                desc.digest,
                desc.size
            );
        }
        let mut buf = Vec::new();
        self.stream_blob(opts, desc, 0, |chunk| {
            buf.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(buf)
    }

    /// Stream blob `desc` from byte `offset` on, chunk by chunk, into `sink`; returns
    /// the bytes passed. The caller verifies digest and size as the bytes pass (it must,
    /// and does). A transient failure before the first byte is retried here; one after
    /// it is the caller's to resume (with `offset` = bytes it has), see
    /// [`BlobStreamError`].
    ///
    /// The request always carries a `Range` header, even from 0: registries answer 206
    /// with a plain stream, which spares hashing every byte a second time inside
    /// oci-client (the caller hashes already). A 200 answer is read the same way.
    pub async fn stream_blob(
        &self,
        opts: &RegistryOptions,
        desc: &Descriptor,
        offset: u64,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let reference = self.reference_for(Some(&desc.digest));
        let od = oci_client::manifest::OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..Default::default()
        };
        let response = retry(opts, || {
            self.client
                .pull_blob_stream_partial(&reference, &od, offset, None)
        })
        .await
        .map_err(|e| self.explain(e))?;
        let mut stream = match response {
            oci_client::client::BlobResponse::Partial(s) => s,
            oci_client::client::BlobResponse::Full(s) if offset == 0 => s,
            oci_client::client::BlobResponse::Full(_) => {
                return Err(BlobStreamError::RangeIgnored.into())
            }
        };
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    n += bytes.len() as u64;
                    sink(&bytes)?;
                }
                // On a full (200) answer oci-client checks the digest itself at the
                // end; the caller's check gives the message, so only report transport
                // errors. (It also fires on a short body: the caller reports truncation.)
                Err(e) if e.to_string().to_ascii_lowercase().contains("digest") => break,
                Err(e) => return Err(BlobStreamError::Transport(anyhow!(e)).into()),
            }
        }
        Ok(n)
    }

    fn explain(&self, e: OciDistributionError) -> anyhow::Error {
        explain(e, &self.repo, self.had_credentials, &self.authfiles, &[])
    }
}

/// A failure in the middle of a blob transfer; the caller may resume it.
#[derive(Debug, thiserror::Error)]
pub enum BlobStreamError {
    #[error("connection failed during blob transfer: {0:#}")]
    Transport(anyhow::Error),
    /// Asked to resume, the registry sent the whole blob: start over from 0.
    #[error("the registry does not support resuming a blob transfer")]
    RangeIgnored,
}

/// Turn oci-client's errors into one-line messages naming the image and the cause.
fn explain(
    e: OciDistributionError,
    r: &RegistryRef,
    had_credentials: bool,
    authfiles: &[PathBuf],
    certs: &[(PathBuf, Vec<u8>)],
) -> anyhow::Error {
    let name = r.name();
    let shown = one_line(&e.to_string());
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            if had_credentials {
                anyhow!(
                    "registry {} rejected the credentials for {name} (401 Unauthorized)",
                    r.registry
                )
            } else if authfiles.is_empty() {
                anyhow!("registry {} requires authentication for {name} (401 Unauthorized) and no credentials were found: pass --authfile or log in with podman/skopeo", r.registry)
            } else {
                let files: Vec<String> =
                    authfiles.iter().map(|p| p.display().to_string()).collect();
                anyhow!(
                    "registry {} requires authentication for {name} (401 Unauthorized) and {} no credentials for it: add them (podman login --authfile FILE {})",
                    r.registry,
                    match files.as_slice() {
                        [one] => format!("the authfile {one} has"),
                        _ => format!("the authfiles {} have", files.join(", ")),
                    },
                    r.registry
                )
            }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let msgs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| one_line(&e.message))
                .collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                anyhow!("image {r} not found (404: {})", msgs.join("; "))
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Denied | OciErrorCode::Unauthorized))
            {
                anyhow!(
                    "registry {} denied access to {name} ({})",
                    r.registry,
                    msgs.join("; ")
                )
            } else {
                anyhow!(
                    "registry {} refused the request for {r}: {}",
                    r.registry,
                    msgs.join("; ")
                )
            }
        }
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => {
            anyhow!("image {r} not found (404)")
        }
        OciDistributionError::ServerError { code, message, .. } => {
            anyhow!(
                "registry {} answered HTTP {code} for {r}: {}",
                r.registry,
                one_line(message)
            )
        }
        OciDistributionError::RequestError(re) => {
            let chain = one_line(&error_chain(re));
            let hint = if chain.contains("certificate")
                || chain.contains("UnknownIssuer")
                || chain.contains("invalid peer")
            {
                if certs.is_empty() {
                    ": the registry's certificate is not trusted; pass its CA with --ca-file or --cert-dir (or --tls-verify=false for a local test registry)"
                } else {
                    ": the registry's certificate is not trusted by the given CA files"
                }
            } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
                ": the registry does not speak TLS; for a plain-HTTP (test) registry pass --tls-verify=false"
            } else {
                ""
            };
            anyhow!("cannot reach registry {}: {chain}{hint}", r.registry)
        }
        _ => anyhow!("registry {} for {r}: {shown}", r.registry),
    }
}

/// reqwest errors hide their cause in `source()`; spell the chain out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// Transient: the network or the server hiccupped, so the same request may succeed.
/// Client errors (4xx other than 429) are final.
pub fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(re) => {
            // A TLS failure surfaces as a connect error too, but retrying cannot fix it.
            let chain = error_chain(re);
            let tls = [
                "certificate",
                "corrupt message",
                "InvalidContentType",
                "handshake",
                "CertificateRequired",
                "UnknownIssuer",
            ]
            .iter()
            .any(|m| chain.contains(m));
            !tls && (re.is_connect()
                || re.is_timeout()
                || re.is_body()
                || (re.is_request() && !re.is_builder()))
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::Toomanyrequests),
        OciDistributionError::IoError(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

/// Run `op` until it succeeds, fails for good, or `opts.retries` retries are used,
/// backing off exponentially from `opts.retry_delay`.
pub async fn retry<T, F, Fut>(
    opts: &RegistryOptions,
    mut op: F,
) -> std::result::Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
{
    let mut delay = opts.retry_delay;
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < opts.retries && is_transient(&e) => {
                attempt += 1;
                log::info!(
                    "transient registry error, retry {attempt}/{} in {delay:?}: {}",
                    opts.retries,
                    one_line(&e.to_string())
                );
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_side_and_rate_limit_errors_are_transient() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        let cases = [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (404, false),
            (401, false),
            (403, false),
            (400, false),
        ];
        for (code, want) in cases {
            assert_eq!(is_transient(&server(code)), want, "{code}");
        }
        assert!(!is_transient(&OciDistributionError::UnauthorizedError {
            url: "u".into()
        }));
        let io = |k| OciDistributionError::IoError(std::io::Error::from(k));
        assert!(is_transient(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!is_transient(&io(std::io::ErrorKind::PermissionDenied)));
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up() {
        let opts = RegistryOptions {
            retries: 2,
            retry_delay: Duration::from_millis(1),
            ..Default::default()
        };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r: std::result::Result<(), _> = retry(&opts, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Err(OciDistributionError::ServerError {
                    code: 503,
                    url: "u".into(),
                    message: "busy".into(),
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let r: std::result::Result<(), _> = retry(&opts, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(OciDistributionError::UnauthorizedError { url: "u".into() }) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a 401 is not retried"
        );
    }
}
