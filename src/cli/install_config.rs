//! `layerboot install-config`: the install-config.yaml pieces a layered image needs,
//! printed, or patched into an existing file in place.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cacert::CaBundle;
use crate::cli::registry_args::RegistryArgs;
use crate::openshift::installconfig::platform::{
    self, BootImagePlan, BootPlatform, MachineImage, StreamChoice,
};
use crate::openshift::installconfig::{self, InstallConfig, Mirror, Patch, Stream};
use crate::openshift::manifests::installdir::InstallDir;

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
    /// CoreOS stream metadata (stream.json, e.g. from `layerboot disk`): the boot image of
    /// the install-config's platform (baremetal, openstack, vsphere, nutanix: clusterOSImage;
    /// aws, gcp, azure: the import commands).
    #[arg(long, value_name = "FILE", conflicts_with = "cluster_os_image")]
    pub stream: Option<PathBuf>,
    /// install-config platform for printed pieces (default baremetal); with an
    /// install-config file it must match the file's platform.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<BootPlatform>,
    /// Bare metal only: stream platform for clusterOSImage (default metal).
    #[arg(long, value_name = "PLATFORM")]
    pub stream_platform: Option<String>,
    /// Stream format (default: the platform's, e.g. raw.xz … for metal, qcow2.gz|qcow2.xz for openstack).
    #[arg(long, value_name = "FORMAT")]
    pub stream_format: Option<String>,
    /// Where the stream's artifacts are served, for stream metadata whose `location` is a
    /// bare file name (layerboot disk without --base-url).
    #[arg(long, value_name = "URL")]
    pub stream_base_url: Option<String>,
    /// Stream architecture (CoreOS naming); default: the install-config's
    /// controlPlane.architecture, or this machine's when printing pieces.
    #[arg(long, value_name = "ARCH")]
    pub stream_arch: Option<String>,
    /// AWS: the imported layered AMI, for platform.aws.defaultMachinePlatform.amiID.
    #[arg(long, value_name = "AMI")]
    pub aws_ami: Option<String>,
    /// GCP: the imported layered image, PROJECT/NAME, for platform.gcp.defaultMachinePlatform.osImage.
    #[arg(long, value_name = "PROJECT/NAME")]
    pub gcp_image: Option<String>,
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
    /// Whether any option that changes install-config.yaml was given.
    pub fn any(&self) -> bool {
        self.trust_bundle.is_some()
            || !self.mirrors.is_empty()
            || self.stream.is_some()
            || self.cluster_os_image.is_some()
            || self.bootstrap_os_image.is_some()
            || self.aws_ami.is_some()
            || self.gcp_image.is_some()
    }

    /// The platform and stream architecture the boot image is for: the install-config's
    /// when there is one (options that contradict it are refused), else the options'.
    fn target(&self, ic: Option<&InstallConfig>) -> Result<(Option<BootPlatform>, String)> {
        let Some(ic) = ic else {
            let arch = self
                .stream_arch
                .clone()
                .unwrap_or_else(|| std::env::consts::ARCH.to_string());
            return Ok((Some(self.platform.unwrap_or(BootPlatform::BareMetal)), arch));
        };
        let name = ic.platform().unwrap_or("none");
        if let Some(p) = self.platform {
            if p.key() != name {
                bail!("--platform {p} does not match the install-config's platform '{name}'");
            }
        }
        let goarch = ic.architecture();
        let arch = platform::stream_arch_for(goarch).with_context(|| {
            format!("install-config controlPlane.architecture '{goarch}' is not one layerboot knows (amd64, arm64, ppc64le, s390x)")
        })?;
        if let Some(a) = &self.stream_arch {
            if a != arch {
                bail!("--stream-arch {a} does not match the install-config's controlPlane.architecture {goarch} ({arch} in stream metadata)");
            }
        }
        // An unknown platform only matters if a boot image was asked for.
        Ok((name.parse::<BootPlatform>().ok(), arch.to_string()))
    }

    /// Everything but the pull secret, for the install-config `ic` (None: printed pieces):
    /// read and validate the named files; the boot image plan says what each setting does.
    pub fn plan(&self, ic: Option<&InstallConfig>) -> Result<(Patch, Option<BootImagePlan>)> {
        let mut p = Patch {
            mirrors: self.mirrors.clone(),
            ..Default::default()
        };
        if let Some(path) = &self.trust_bundle {
            p.trust_bundle = Some(CaBundle::load(path)?);
        }
        let wants_image = self.stream.is_some()
            || self.cluster_os_image.is_some()
            || self.bootstrap_os_image.is_some()
            || self.aws_ami.is_some()
            || self.gcp_image.is_some();
        if !wants_image {
            return Ok((p, None));
        }
        let (platform, arch) = self.target(ic)?;
        let platform = match platform {
            Some(pl) => pl,
            None => {
                let name = ic.and_then(|i| i.platform()).unwrap_or("none");
                name.parse::<BootPlatform>()?
            }
        };
        p.os_image_platform = Some(platform);
        let machine_image = match (&self.aws_ami, &self.gcp_image) {
            (Some(_), Some(_)) => bail!("--aws-ami and --gcp-image are for different platforms"),
            (Some(a), None) => Some(MachineImage::aws(a)?),
            (None, Some(g)) => Some(MachineImage::gcp(g)?),
            (None, None) => None,
        };
        let mut plan = None;
        if let Some(mi) = &machine_image {
            if mi.platform() != platform {
                bail!(
                    "--{} is for platform {}, but the install-config's platform is '{platform}'",
                    if mi.platform() == BootPlatform::Aws {
                        "aws-ami"
                    } else {
                        "gcp-image"
                    },
                    mi.platform()
                );
            }
            let pl = platform::plan_machine_image(mi);
            p.machine_image = pl.machine_image.clone();
            plan = Some(pl);
        } else if let Some(path) = &self.stream {
            let what = format!("stream metadata {}", path.display());
            let bytes = std::fs::read(path).with_context(|| format!("reading {what}"))?;
            let stream = Stream::parse(&bytes, &what)?;
            let choice = StreamChoice {
                arch,
                stream_platform: self.stream_platform.clone(),
                format: self.stream_format.clone(),
                base_url: self.stream_base_url.clone(),
            };
            let pl = platform::plan(&stream, &what, platform, &choice)?;
            p.cluster_os_image = pl.cluster_os_image.clone();
            p.bootstrap_os_image = pl.bootstrap_os_image.clone();
            plan = Some(pl);
        }
        if self.cluster_os_image.is_some()
            && matches!(
                platform,
                BootPlatform::Aws | BootPlatform::Gcp | BootPlatform::Azure
            )
        {
            bail!("--cluster-os-image: platform {platform} takes no clusterOSImage URL (AWS and GCP take an image id: --aws-ami, --gcp-image)");
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
                // The uncompressed sha256 is also the file's for an uncompressed image
                // (ova, qcow2), so it is right for every clusterOSImage platform.
                let sha = installconfig::uncompressed_sha256(disk)?;
                *slot = Some(installconfig::os_image_url(
                    url,
                    &sha,
                    &format!("--disk {}", disk.display()),
                )?);
            }
        }
        if p.bootstrap_os_image.is_some() && platform != BootPlatform::BareMetal {
            bail!("--bootstrap-os-image is a platform.baremetal setting, but the platform is '{platform}'");
        }
        Ok((p, plan))
    }
}

/// Print a boot image plan's notes and import commands on stderr.
pub fn print_plan(plan: &BootImagePlan) {
    for n in &plan.notes {
        crate::errln!("note: {n}");
    }
    if !plan.import_commands.is_empty() {
        crate::errln!("import the artifact (not run by layerboot; set the $VARIABLES first):");
        for c in &plan.import_commands {
            crate::errln!("  {c}");
        }
    }
}

pub fn run(args: InstallConfigArgs) -> Result<()> {
    let o = &args.opts;
    if args.image.is_none() && !o.any() {
        bail!("nothing to do: give IMAGE (pull secret), --trust-bundle, --mirror, --stream, --cluster-os-image, --aws-ami or --gcp-image");
    }
    let image = args
        .image
        .as_deref()
        .map(crate::image::registry_ref)
        .transpose()?;
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
    // Every input is read and checked before anything is written.
    let ic = target.as_deref().map(InstallConfig::load).transpose()?;
    let (base, plan) = args.opts.plan(ic.as_ref()).with_context(|| match &target {
        Some(t) => t.display().to_string(),
        None => "install-config pieces".to_string(),
    })?;
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
    match (target, ic) {
        (Some(path), Some(ic)) => {
            let outcome = crate::openshift::installconfig::patch_file(
                &path,
                ic,
                base,
                image.as_ref(),
                &creds,
            )?;
            for m in &outcome.messages {
                crate::errln!("{m}");
            }
            let changes = outcome.changes;
            crate::errln!("patched {} (mode 0600):", path.display());
            for c in changes {
                crate::errln!("  {c}");
            }
        }
        _ => {
            let (patch, message) = crate::openshift::installconfig::complete_patch(
                base,
                image.as_ref(),
                &creds,
                None,
            )?;
            if let Some(m) = message {
                crate::errln!("{m}");
            }
            if patch.pull_secret.is_some() {
                crate::errln!("note: the pullSecret piece holds only the image registry's entry: merge it into your pull secret, or pass --install-config to patch the file");
            }
            let text = installconfig::pieces(&patch, args.show_secrets)?;
            // An empty mapping prints as `{}`: say why instead (e.g. an import is needed first).
            if text.trim() != "{}" {
                crate::out!("{text}")?;
            }
        }
    }
    if let Some(plan) = &plan {
        print_plan(plan);
        crate::errln!("first boot: {}", plan.first_boot);
    }
    Ok(())
}
