//! `layerboot manifests`: MachineConfig / MachineOSConfig / MachineConfigPool manifests for
//! the pools that run the layered image, into an installer directory or to stdout.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cli::registry_args::RegistryArgs;
use crate::imageref::{ImageRef, RegistryRef};
use crate::manifests::installdir::{self, InstallDir};
use crate::manifests::{
    self, ManifestSettings, MethodChoice, OpenShiftVersion, OutputFile, PushSettings,
};
use crate::registry::{self, auth::AuthFile, RegistryOptions};

#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// The layered image (registry reference; a tag is resolved to its digest first).
    pub image: String,
    #[command(flatten)]
    pub common: ManifestOptions,
    /// openshift-install directory (after `openshift-install create manifests`); without it
    /// the manifests are printed as one multi-document YAML stream.
    #[arg(long, value_name = "INSTALLDIR")]
    pub dir: Option<PathBuf>,
    /// Print secret values (the push Secret) instead of redacting them.
    #[arg(long)]
    pub show_secrets: bool,
    #[command(flatten)]
    pub source: ImageSourceArgs,
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

/// Options shared with `install-kit`.
#[derive(Debug, Args, Clone)]
pub struct ManifestOptions {
    /// Pool to run the image on (repeat for several); custom pools also get a MachineConfigPool.
    #[arg(long = "pool", value_name = "POOL", required = true)]
    pub pools: Vec<String>,
    /// machineconfig (every 4.x), machineosconfig (install-time image mode, 4.21+), or auto
    /// (by --openshift-version; without it, machineconfig).
    #[arg(long, value_enum, default_value = "auto")]
    pub method: MethodChoice,
    /// OpenShift release being installed, 4.N.
    #[arg(long, value_name = "4.N")]
    pub openshift_version: Option<String>,
    /// MachineOSConfig: tagged pull spec where the MCO pushes images it builds later.
    #[arg(long, value_name = "PULLSPEC")]
    pub push_spec: Option<String>,
    /// MachineOSConfig: name of the push Secret in openshift-machine-config-operator.
    #[arg(long, value_name = "NAME", default_value = "layered-image-push-secret")]
    pub push_secret_name: String,
    /// MachineOSConfig: Containerfile kept for later on-cluster rebuilds (≤ 4096 bytes).
    #[arg(long, value_name = "FILE")]
    pub containerfile: Option<PathBuf>,
}

/// Parse IMAGE as a registry reference (manifests need a registry pull spec).
pub fn registry_ref(image: &str) -> Result<RegistryRef> {
    match image.parse::<ImageRef>()? {
        ImageRef::Registry(r) => Ok(r),
        other => bail!("'{other}' is not a registry image: nodes pull osImageURL from a registry; push it and give registry/repo@sha256:…"),
    }
}

/// The image as nodes must see it: pinned by digest, plus whether it is a bootc image.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub image: RegistryRef,
    pub bootc: bool,
}

/// Pin the image for the cluster: resolve a tag to its digest in the registry (a given
/// digest is checked to exist) and read its labels.
///
/// A tag naming a multi-arch index is pinned to the *index* digest: CRI-O and rpm-ostree
/// pick the node's architecture from it, so one osImageURL serves a multi-arch cluster.
pub async fn pin(image: &RegistryRef, reg: &RegistryOptions, offline: bool) -> Result<Pinned> {
    if offline {
        let Some(d) = &image.digest else {
            bail!("--offline needs the image pinned by digest (registry/repo@sha256:…): a tag cannot be resolved without the registry");
        };
        return Ok(Pinned {
            image: image.pinned(d),
            bootc: false,
        });
    }
    let resolved = registry::resolve(&ImageRef::Registry(image.clone()), reg)
        .await
        .with_context(|| format!("resolving {image}"))?;
    let digest = match (&image.digest, &resolved.index_digest) {
        (Some(d), _) => d.clone(),
        (None, Some(index)) => index.clone(),
        (None, None) => resolved.manifest_digest.clone(),
    };
    let labels = resolved
        .config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let bootable = labels
        .get("ostree.bootable")
        .is_some_and(|v| v == "true" || v == "1")
        || labels.contains_key("containers.bootc");
    if !bootable {
        bail!("{image} is not a bootable ostree container image (no ostree.bootable or containers.bootc label): build it FROM a CoreOS/RHCOS base");
    }
    let bootc = labels
        .get("containers.bootc")
        .is_some_and(|v| v == "1" || v == "true");
    Ok(Pinned {
        image: image.pinned(&digest),
        bootc,
    })
}

/// [`push_secret_auth`] when the chosen method needs a push Secret.
pub fn push_secret_auth_for(
    check: &ManifestSettings,
    opts: &ManifestOptions,
    creds: &AuthFile,
) -> Result<Option<Vec<u8>>> {
    match check.method {
        manifests::Method::MachineOsConfig => push_secret_auth(opts, creds),
        manifests::Method::MachineConfig => Ok(None),
    }
}

/// The push Secret's content for the MachineOSConfig method: only the push registry's
/// entry from the authfile(s).
pub fn push_secret_auth(opts: &ManifestOptions, creds: &AuthFile) -> Result<Option<Vec<u8>>> {
    let Some(spec) = &opts.push_spec else {
        return Ok(None);
    };
    let push_ref = registry_ref(spec).with_context(|| format!("--push-spec {spec}"))?;
    match crate::cli::install_config::entry_for_image(creds, &push_ref) {
        Some((_, one)) => Ok(Some(one.to_json().into_bytes())),
        None => bail!(
            "no credentials for the push registry {} in the authfile: the MachineOSConfig push Secret needs them (give --authfile)",
            push_ref.registry
        ),
    }
}

impl ManifestOptions {
    /// Validate everything that needs no I/O beyond reading the named files.
    pub fn settings(
        &self,
        image: RegistryRef,
        push_auth: Option<Vec<u8>>,
    ) -> Result<(ManifestSettings, String)> {
        manifests::validate_pools(&self.pools)?;
        let version = self
            .openshift_version
            .as_deref()
            .map(str::parse::<OpenShiftVersion>)
            .transpose()?;
        let (method, why) = manifests::choose_method(self.method, version)?;
        let containerfile = match &self.containerfile {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading Containerfile {}", p.display()))?,
            ),
            None => None,
        };
        let push = self.push_spec.as_ref().map(|spec| PushSettings {
            spec: spec.clone(),
            secret_name: self.push_secret_name.clone(),
            dockerconfigjson: push_auth,
            containerfile,
        });
        if let Some(p) = &push {
            manifests::validate_push(p).map_err(|e| match &self.containerfile {
                Some(cf) if e.to_string().starts_with("Containerfile") => {
                    e.context(format!("--containerfile {}", cf.display()))
                }
                _ => e,
            })?;
        }
        Ok((
            ManifestSettings {
                image,
                pools: self.pools.clone(),
                method,
                push,
            },
            format!("method: {method} ({why})"),
        ))
    }
}

/// One line per written file: mode, path, what.
pub fn summary_line(root: &std::path::Path, f: &OutputFile) -> String {
    format!(
        "  {:04o}  {}  {}",
        f.mode,
        root.join(&f.rel_path).display(),
        f.what
    )
}

pub async fn run(args: ManifestsArgs) -> Result<()> {
    let image = registry_ref(&args.image)?;
    // Validate all local input before any network access.
    let (check, _) = args.common.settings(image.clone(), None)?;
    let dir = args.dir.as_deref().map(InstallDir::open).transpose()?;
    if let Some(d) = &dir {
        d.require_manifests()?;
    }
    let reg = args.source.registry.resolve()?;
    let push_auth = push_secret_auth_for(&check, &args.common, &reg.auth.merged()?)?;
    let pinned = pin(&image, &reg, args.source.offline).await?;
    let (settings, method_line) = args.common.settings(pinned.image, push_auth)?;
    let files = manifests::render(&settings)?;
    crate::errln!("{method_line}");
    for w in manifests::caveats(&settings) {
        crate::errln!("warning: {w}");
    }
    match dir {
        Some(d) => {
            installdir::write_files(&d.root, &files)?;
            crate::errln!("wrote:");
            for f in &files {
                crate::errln!("{}", summary_line(&d.root, f));
            }
        }
        None => crate::out!("{}", manifests::to_stream(&files, args.show_secrets)?)?,
    }
    Ok(())
}
