//! Registry options shared by every subcommand that reads an image; flatten
//! [`RegistryArgs`] into a subcommand's args with `#[command(flatten)]`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::registry::{auth::AuthStore, manifest, RegistryOptions};

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
    /// plain HTTP, as podman does (for local test registries).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
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
        for f in &self.ca_files {
            if !f.is_file() {
                bail!("CA file {} does not exist", f.display());
            }
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
            (&["--tls-verify", "false"], false),
        ];
        for (args, want) in cases {
            let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
            assert_eq!(t.r.tls_verify, *want, "{args:?}");
        }
        assert!(T::try_parse_from(["t", "--tls-verify=maybe"]).is_err());
    }

    #[test]
    fn resolve_validates() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
        let a = auth.to_str().unwrap();
        let ok = T::try_parse_from(["t", "--authfile", a, "--arch", "aarch64", "--ca-file", a])
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
        ];
        for (args, want) in bad {
            let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
            let err = format!("{:#}", t.r.resolve().unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
