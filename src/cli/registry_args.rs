//! Registry options shared by every subcommand that reads an image; flatten
//! [`RegistryArgs`] into a subcommand's args with `#[command(flatten)]`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::oci::manifest;
use crate::registry::{auth::AuthStore, RegistryOptions};

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry credentials: a docker config.json, containers auth.json or OpenShift
    /// pull secret. Default: $REGISTRY_AUTH_FILE, else podman's search order.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// Directory of CA certificates (*.crt) to trust for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// A PEM CA certificate to trust for the registry (repeatable).
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,

    /// Verify the registry's TLS certificate. false: accept any certificate and allow
    /// plain HTTP, as podman does (for local test registries). Podman's form: the value
    /// only after `=` (`--tls-verify=false`), so `--tls-verify IMAGE` keeps its IMAGE.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,

    /// Architecture to pick from a multi-arch image, OCI naming (amd64, arm64,
    /// ppc64le, s390x). Default: this machine's.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
}

impl RegistryArgs {
    /// Validate the arguments and load the credentials.
    pub fn resolve(&self) -> Result<RegistryOptions> {
        let auth = match &self.authfile {
            Some(p) => AuthStore::from_file(p)?,
            None => AuthStore::discover()?,
        };
        let arch = match &self.arch {
            Some(a) => {
                let a = manifest::oci_arch(a.trim());
                if a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    bail!(
                        "invalid --arch '{a}': use an OCI architecture name such as amd64 or arm64"
                    );
                }
                a.to_string()
            }
            None => manifest::host_arch().to_string(),
        };
        // Parsed as every CA bundle is: a bad file fails here, before any connection
        // (oci-client would drop it with a log line and carry on without it).
        for f in &self.ca_files {
            crate::cacert::CaBundle::load(f)?;
        }
        if let Some(d) = &self.cert_dir {
            if !d.is_dir() {
                bail!(
                    "cert dir {} does not exist or is not a directory",
                    d.display()
                );
            }
        }
        Ok(RegistryOptions {
            auth,
            ca_files: self.ca_files.clone(),
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            arch,
            ..RegistryOptions::default()
        })
    }
}

/// Where the image is looked up, shared by every command that pins an image.
#[derive(Debug, Args, Clone)]
pub struct ImageSourceArgs {
    /// Trust the given digest and do not contact the registry (for install hosts that
    /// cannot reach it); needs IMAGE@sha256:…, and skips the bootable-image check.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        r: RegistryArgs,
    }

    #[test]
    fn tls_verify_forms() {
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["--tls-verify"], true),
            (&["--tls-verify=false"], false),
            (&["--tls-verify=true"], true),
        ];
        for (args, want) in cases {
            let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
            assert_eq!(t.r.tls_verify, *want, "{args:?}");
        }
        assert!(T::try_parse_from(["t", "--tls-verify=maybe"]).is_err());
        // issue #15 item 9: the flag must not swallow the next argument (the image)
        #[derive(Parser)]
        struct WithImage {
            image: String,
            #[command(flatten)]
            r: RegistryArgs,
        }
        for args in [
            ["t", "--tls-verify", "quay.io/a/b"],
            ["t", "quay.io/a/b", "--tls-verify"],
        ] {
            let t = WithImage::try_parse_from(args).unwrap();
            assert_eq!(
                (t.image.as_str(), t.r.tls_verify),
                ("quay.io/a/b", true),
                "{args:?}"
            );
        }
    }

    #[test]
    fn resolve_validates() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
        let a = auth.to_str().unwrap();
        let bad_ca = dir.path().join("bad.pem");
        std::fs::write(
            &bad_ca,
            "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = bad_ca.to_str().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, include_bytes!("../../tests/golden/test-ca.crt")).unwrap();
        let ca = ca.to_str().unwrap();
        let ok = T::try_parse_from(["t", "--authfile", a, "--arch", "aarch64", "--ca-file", ca])
            .unwrap()
            .r
            .resolve()
            .unwrap();
        assert_eq!(
            (ok.arch.as_str(), ok.tls_verify, ok.ca_files.len()),
            ("arm64", true, 1)
        );
        let bad: &[(&[&str], &str)] = &[
            (
                &["--authfile", "/nonexistent/auth.json"],
                "/nonexistent/auth.json",
            ),
            (&["--authfile", a, "--arch", "x/y"], "--arch"),
            (
                &["--authfile", a, "--ca-file", "/nonexistent/ca.pem"],
                "/nonexistent/ca.pem",
            ),
            (
                &["--authfile", a, "--cert-dir", "/nonexistent/certs"],
                "/nonexistent/certs",
            ),
            // issue #15 item 4: a file that only looks like PEM fails before any connection
            (
                &["--authfile", a, "--ca-file", bad],
                "not a valid X.509 certificate",
            ),
            (
                &["--authfile", a, "--ca-file", a],
                "no PEM certificate found",
            ),
        ];
        for (args, want) in bad {
            let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
            let err = format!("{:#}", t.r.resolve().unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
