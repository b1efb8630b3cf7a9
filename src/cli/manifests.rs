//! `layerboot manifests`: MachineConfig / MachineOSConfig / MachineConfigPool manifests for
//! the pools that run the layered image, into an installer directory or to stdout.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cli::registry_args::ImageSourceArgs;
use crate::oci::reference::RegistryRef;
use crate::openshift::manifests::installdir::{self, InstallDir};
use crate::openshift::manifests::{
    self, ManifestSettings, MethodChoice, OpenShiftVersion, OutputFile, PushSettings,
};
use crate::registry::auth::AuthFile;

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
    /// MachineOSConfig: the Containerfile the image was built from (≤ 4096 bytes), required:
    /// the MCO rebuilds the pool's image from it after install (upgrades, MachineConfig
    /// changes), and a rebuild without it drops the customization.
    #[arg(long, value_name = "FILE")]
    pub containerfile: Option<PathBuf>,
    /// Also write the MachineConfiguration that opts MachineSets out of boot image
    /// management, so the MCO does not replace a custom boot image (vSphere, Azure) on upgrade.
    #[arg(long)]
    pub keep_boot_images: bool,
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
    let push_ref =
        crate::image::registry_ref(spec).with_context(|| format!("--push-spec {spec}"))?;
    match creds.single_entry_for(&push_ref) {
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
        // Without --push-spec, render() names that first (the method needs both).
        if method == manifests::Method::MachineOsConfig
            && push.is_some()
            && self.containerfile.is_none()
        {
            bail!("{}", manifests::CONTAINERFILE_REQUIRED);
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
    let image = crate::image::registry_ref(&args.image)?;
    // Validate all local input before any network access.
    let (check, _) = args.common.settings(image.clone(), None)?;
    let dir = args.dir.as_deref().map(InstallDir::open).transpose()?;
    if let Some(d) = &dir {
        d.require_manifests()?;
    }
    let reg = args.source.registry.resolve()?;
    let push_auth = push_secret_auth_for(&check, &args.common, &reg.auth.merged()?)?;
    let pinned = crate::image::pin(&image, &reg, args.source.offline).await?;
    let (settings, method_line) = args.common.settings(pinned.image, push_auth)?;
    let mut files = manifests::render(&settings)?;
    if args.common.keep_boot_images {
        files.push(manifests::keep_boot_images_file()?);
    }
    crate::infoln!("{method_line}");
    for w in manifests::caveats(&settings) {
        crate::errln!("warning: {w}");
    }
    match dir {
        Some(d) => {
            installdir::write_files(&d.root, &files)?;
            crate::infoln!("wrote:");
            for f in &files {
                crate::infoln!("{}", summary_line(&d.root, f));
            }
        }
        None => crate::out!("{}", manifests::to_stream(&files, args.show_secrets)?)?,
    }
    Ok(())
}
