//! `layerboot install-config`: the install-config.yaml pieces a layered image needs,
//! printed, or patched into an existing file in place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cacert::CaBundle;
use crate::cli::registry_args::RegistryArgs;
use crate::imageref::RegistryRef;
use crate::installconfig::{self, InstallConfig, Mirror, Patch, Stream};
use crate::manifests::installdir::InstallDir;
use crate::registry::auth::{normalize_key, AuthFile};

#[derive(Debug, Args)]
pub struct InstallConfigArgs {
    /// The layered image: its registry's credentials (from the authfile) are merged into
    /// pullSecret. Optional when only other pieces are wanted.
    pub image: Option<String>,
    #[command(flatten)]
    pub opts: InstallConfigOptions,
    /// install-config.yaml to patch in place (kept 0600: it holds the pull secret).
    /// Without it or --dir, the pieces are printed as YAML.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    pub install_config: Option<PathBuf>,
    /// Installer directory whose install-config.yaml to patch.
    #[arg(long, value_name = "INSTALLDIR")]
    pub dir: Option<PathBuf>,
    /// Print the pull secret instead of redacting it.
    #[arg(long)]
    pub show_secrets: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Options shared with `install-kit`.
#[derive(Debug, Args, Clone)]
pub struct InstallConfigOptions {
    /// PEM CA bundle for additionalTrustBundle, e.g. the CA of your registry.
    #[arg(long, value_name = "FILE")]
    pub trust_bundle: Option<PathBuf>,
    /// imageDigestSources mirror, SOURCE=MIRROR repositories (repeatable).
    #[arg(long = "mirror", value_name = "SOURCE=MIRROR")]
    pub mirrors: Vec<Mirror>,
    /// CoreOS stream metadata (stream.json, e.g. from `layerboot disk`): sets
    /// platform.baremetal.clusterOSImage from --stream-platform and bootstrapOSImage from
    /// its qemu artifact when present.
    #[arg(long, value_name = "FILE", conflicts_with = "cluster_os_image")]
    pub stream: Option<PathBuf>,
    /// Stream platform for clusterOSImage.
    #[arg(long, value_name = "PLATFORM", default_value = "metal")]
    pub stream_platform: String,
    /// Stream format for clusterOSImage (default: raw.xz, raw.gz, qcow2.xz, … in that order).
    #[arg(long, value_name = "FORMAT")]
    pub stream_format: Option<String>,
    /// Where the stream's artifacts are served, for stream metadata whose `location` is a
    /// bare file name (layerboot disk without --base-url).
    #[arg(long, value_name = "URL")]
    pub stream_base_url: Option<String>,
    /// Stream architecture (CoreOS naming).
    #[arg(long, value_name = "ARCH", default_value = std::env::consts::ARCH)]
    pub stream_arch: String,
    /// URL where nodes download the disk image for clusterOSImage (with --disk).
    #[arg(long, value_name = "URL", requires = "disk")]
    pub cluster_os_image: Option<String>,
    /// The disk image served at --cluster-os-image (its uncompressed sha256 is computed).
    #[arg(long, value_name = "FILE", requires = "cluster_os_image")]
    pub disk: Option<PathBuf>,
    /// URL of the bootstrap VM image for bootstrapOSImage (with --bootstrap-disk).
    #[arg(long, value_name = "URL", requires = "bootstrap_disk")]
    pub bootstrap_os_image: Option<String>,
    #[arg(long, value_name = "FILE", requires = "bootstrap_os_image")]
    pub bootstrap_disk: Option<PathBuf>,
}

impl InstallConfigOptions {
    /// Everything but the pull secret: read and validate the named files.
    pub fn patch(&self) -> Result<Patch> {
        let mut p = Patch {
            mirrors: self.mirrors.clone(),
            ..Default::default()
        };
        if let Some(path) = &self.trust_bundle {
            p.trust_bundle = Some(CaBundle::load(path)?);
        }
        if let Some(path) = &self.stream {
            let what = format!("stream metadata {}", path.display());
            let bytes = std::fs::read(path).with_context(|| format!("reading {what}"))?;
            let stream = Stream::parse(&bytes, &what)?;
            let (fmt, disk) = stream.disk(
                &self.stream_arch,
                &self.stream_platform,
                self.stream_format.as_deref(),
                &what,
            )?;
            let sha = disk.uncompressed_sha256.as_deref().with_context(|| {
                format!(
                    "{what}: {} {fmt} disk has no uncompressed-sha256",
                    self.stream_platform
                )
            })?;
            let base = self.stream_base_url.as_deref();
            p.cluster_os_image = Some(installconfig::os_image_url(
                &installconfig::absolute_location(&disk.location, base),
                sha,
                &what,
            )?);
            if self.stream_platform != "qemu" {
                if let Ok((_, q)) = stream.disk(&self.stream_arch, "qemu", None, &what) {
                    if let Some(qsha) = &q.uncompressed_sha256 {
                        p.bootstrap_os_image = Some(installconfig::os_image_url(
                            &installconfig::absolute_location(&q.location, base),
                            qsha,
                            &what,
                        )?);
                    }
                }
            }
        }
        for (url, disk, slot) in [
            (&self.cluster_os_image, &self.disk, &mut p.cluster_os_image),
            (
                &self.bootstrap_os_image,
                &self.bootstrap_disk,
                &mut p.bootstrap_os_image,
            ),
        ] {
            if let (Some(url), Some(disk)) = (url, disk) {
                let sha = installconfig::uncompressed_sha256(disk)?;
                *slot = Some(installconfig::os_image_url(
                    url,
                    &sha,
                    &format!("--disk {}", disk.display()),
                )?);
            }
        }
        Ok(p)
    }
}

/// The credentials entry for `image` from `auths`, as a one-entry auths file, with the
/// key it is filed under. `None` when the authfile has nothing for that registry.
pub fn entry_for_image(auths: &AuthFile, image: &RegistryRef) -> Option<(String, AuthFile)> {
    let (key, entry) = auths.entry_for(image)?;
    let mut one = AuthFile::default();
    one.auths.insert(key.to_string(), entry.clone());
    Some((key.to_string(), one))
}

/// Merge the image's credentials into an install-config `pullSecret`.
///
/// The OpenShift pull secret already holds an entry for `quay.io` (release images); a
/// host-level key for a custom image on the same host would replace it and break the
/// install. When the host is taken, the entry is filed under `host/repository`, which
/// CRI-O and rpm-ostree (containers-image rules: most specific key wins) both honour.
pub fn merge_pull_secret(
    existing: Option<&str>,
    image: &RegistryRef,
    creds: &AuthFile,
) -> Result<Option<String>> {
    let mut secret = match existing {
        Some(s) => AuthFile::parse(s).context("install-config pullSecret")?,
        None => AuthFile::default(),
    };
    let Some((key, entry)) = entry_for_image(creds, image) else {
        return Ok(None);
    };
    let entry = entry.auths.into_values().next().expect("one entry");
    let host = normalize_key(&image.registry);
    let host_taken = secret
        .auths
        .iter()
        .any(|(k, v)| normalize_key(k) == host && *v != entry);
    let key = if normalize_key(&key) == host && host_taken {
        format!("{host}/{}", image.repository)
    } else {
        normalize_key(&key)
    };
    let mut add = AuthFile::default();
    add.auths.insert(key, entry);
    secret.merge(&add);
    Ok(Some(secret.to_json()))
}

/// Complete `patch` (from [`InstallConfigOptions::patch`]) with the merged pull secret.
pub fn full_patch(
    mut patch: Patch,
    image: Option<&RegistryRef>,
    creds: &AuthFile,
    existing_pull_secret: Option<&str>,
) -> Result<Patch> {
    if let Some(image) = image {
        patch.pull_secret = merge_pull_secret(existing_pull_secret, image, creds)?;
        if patch.pull_secret.is_none() {
            crate::errln!("warning: no credentials for {} in the authfile: pullSecret left as is (fine if the image is public)", image.registry);
        }
    }
    Ok(patch)
}

/// Patch the file at `path`; returns the change lines. Writes atomically, 0600.
pub fn patch_file(
    path: &Path,
    base: Patch,
    image: Option<&RegistryRef>,
    creds: &AuthFile,
) -> Result<Vec<String>> {
    let mut ic = InstallConfig::load(path)?;
    let unknown = ic.unknown_fields();
    if !unknown.is_empty() {
        crate::errln!(
            "warning: {} has fields openshift-install does not know: {} (a typo? it would reject the file)",
            path.display(),
            unknown.join(", ")
        );
    }
    let patch = full_patch(base, image, creds, ic.pull_secret())
        .with_context(|| path.display().to_string())?;
    let changes = ic
        .apply(&patch)
        .with_context(|| path.display().to_string())?;
    if ic.had_comments() {
        crate::errln!(
            "note: comments in {} are not kept (openshift-install discards the file on use anyway)",
            path.display()
        );
    }
    crate::io::write_atomic(path, ic.to_yaml()?.as_bytes(), 0o600)?;
    Ok(changes)
}

pub fn run(args: InstallConfigArgs) -> Result<()> {
    let o = &args.opts;
    if args.image.is_none()
        && o.trust_bundle.is_none()
        && o.mirrors.is_empty()
        && o.stream.is_none()
        && o.cluster_os_image.is_none()
        && o.bootstrap_os_image.is_none()
    {
        bail!("nothing to do: give IMAGE (pull secret), --trust-bundle, --mirror, --stream or --cluster-os-image");
    }
    let image = args
        .image
        .as_deref()
        .map(crate::cli::manifests::registry_ref)
        .transpose()?;
    let base = args.opts.patch()?;
    let reg = args.registry.resolve()?;
    let creds = reg.auth.merged()?;
    if let Some(img) = &image {
        if creds.entry_for(img).is_some() {
            let files: Vec<String> = reg.auth.files().map(|p| p.display().to_string()).collect();
            crate::errln!(
                "credentials for {} come from {}",
                img.registry,
                files.join(", ")
            );
        }
    }
    let target = match (&args.install_config, &args.dir) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(d)) => {
            let dir = InstallDir::open(d)?;
            if !dir.has_install_config {
                bail!(
                    "{} has no install-config.yaml: `openshift-install create manifests` already consumed it; patch it before that step",
                    d.display()
                );
            }
            Some(dir.install_config())
        }
        (None, None) => None,
    };
    match target {
        Some(path) => {
            let changes = patch_file(&path, base, image.as_ref(), &creds)?;
            crate::errln!("patched {} (mode 0600):", path.display());
            for c in changes {
                crate::errln!("  {c}");
            }
        }
        None => {
            let patch = full_patch(base, image.as_ref(), &creds, None)?;
            if patch.pull_secret.is_some() {
                crate::errln!("note: the pullSecret piece holds only the image registry's entry: merge it into your pull secret, or pass --install-config to patch the file");
            }
            crate::out!("{}", installconfig::pieces(&patch, args.show_secrets)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        crate::cli::manifests::registry_ref(s).unwrap()
    }

    #[test]
    fn pull_secret_merge_never_clobbers_the_release_credentials() {
        let release = r#"{"auths":{"quay.io":{"auth":"cmVsZWFzZTpyZWxlYXNl","email":"a@b"},"registry.redhat.io":{"auth":"eDp5"}}}"#;
        let host_creds =
            AuthFile::parse(r#"{"auths":{"quay.io":{"auth":"YWNtZTphY21l"}}}"#).unwrap();
        let repo_creds =
            AuthFile::parse(r#"{"auths":{"quay.io/acme":{"auth":"YWNtZTphY21l"}}}"#).unwrap();
        let cases: &[(Option<&str>, &AuthFile, &str, Option<&[&str]>)] = &[
            // host taken by other credentials: file under host/repository
            (
                Some(release),
                &host_creds,
                "quay.io/acme/os",
                Some(&["quay.io", "quay.io/acme/os", "registry.redhat.io"]),
            ),
            // a repository-scoped authfile key is kept as is
            (
                Some(release),
                &repo_creds,
                "quay.io/acme/os",
                Some(&["quay.io", "quay.io/acme", "registry.redhat.io"]),
            ),
            // free host: the host key
            (None, &host_creds, "quay.io/acme/os", Some(&["quay.io"])),
            (
                Some(r#"{"auths":{"quay.io":{"auth":"YWNtZTphY21l"}}}"#),
                &host_creds,
                "quay.io/acme/os",
                Some(&["quay.io"]),
            ),
            // nothing for that registry
            (
                Some(release),
                &host_creds,
                "registry.example.com/acme/os",
                None,
            ),
        ];
        for (existing, creds, image, want) in cases {
            let got = merge_pull_secret(*existing, &r(image), creds).unwrap();
            let keys = got.map(|j| {
                AuthFile::parse(&j)
                    .unwrap()
                    .auths
                    .into_keys()
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                keys,
                want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                "{existing:?} {image}"
            );
        }
        let merged = merge_pull_secret(Some(release), &r("quay.io/acme/os"), &host_creds)
            .unwrap()
            .unwrap();
        assert!(
            merged.contains("\"email\":\"a@b\""),
            "other fields kept: {merged}"
        );
        assert!(merge_pull_secret(Some("{not json"), &r("quay.io/a/b"), &host_creds).is_err());
    }
}
