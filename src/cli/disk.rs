//! `layerboot disk`: a first-boot disk image (qemu qcow2, metal, metal4k, or a user
//! definition) built from the layered image itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::bootimage::{definition::parse_size, Catalog, PlanOptions};
use crate::disk::source::check_bootable_labels;
use crate::disk::{self, Cancel, DiskSettings, SourceImage};
use crate::imageref::ImageRef;

#[derive(Debug, Args)]
pub struct DiskArgs {
    /// The layered image: registry/repo[:tag][@sha256:…] (pulled, verified, into the shared
    /// cache), oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    #[arg(required_unless_present = "list")]
    pub image: Option<String>,

    /// Boot image kind: a definition in bootimages/ (qemu, metal, metal4k) or in --bootimages.
    #[arg(long, short = 'p', default_value = "qemu")]
    pub platform: String,

    /// Directory of extra boot image definitions (NAME.toml); same names override shipped ones.
    #[arg(long, value_name = "DIR", env = "LAYERBOOT_BOOTIMAGES")]
    pub bootimages: Option<PathBuf>,

    /// Disk size, e.g. 10GiB (default: the smallest size that fits, rounded up to 256 MiB).
    #[arg(long)]
    pub size: Option<String>,

    /// Extra kernel argument (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,

    /// ostree stateroot ("osname") to deploy into.
    #[arg(long, default_value = "default")]
    pub stateroot: String,

    /// Output file (default: <image>-<version>-<platform>.x86_64.<format>[.xz|.gz] here).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// Stream metadata JSON to create or update (default: stream.json beside the output).
    #[arg(long, value_name = "FILE")]
    pub stream_metadata: Option<PathBuf>,

    /// Stream name written into the stream metadata.
    #[arg(long, default_value = "layered")]
    pub stream_name: String,

    /// URL the artifact will be served from; stream metadata `location` = URL/FILENAME.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Print what was built as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// List the known boot image definitions (shipped and --bootimages) and exit.
    #[arg(long, conflicts_with = "image")]
    pub list: bool,

    /// No pull progress bars.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl DiskArgs {
    /// Validate the arguments, check the image is bootable from its config (before any
    /// layer is fetched), then make it available in a local OCI layout.
    pub async fn resolve(&self) -> Result<DiskSettings> {
        let catalog = Catalog::load(self.bootimages.as_deref())?;
        let definition = catalog.get(&self.platform)?.clone();
        let image = self.image.as_deref().unwrap_or_default();
        let image_ref: ImageRef = image
            .parse()
            .with_context(|| format!("invalid image reference '{image}'"))?;
        let size = self
            .size
            .as_deref()
            .map(parse_size)
            .transpose()
            .context("--size")?;
        if self.stateroot.is_empty()
            || !self
                .stateroot
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "--stateroot '{}' must be letters, digits, '-', '_' or '.'",
                self.stateroot
            );
        }
        // Kernel arguments and an impossibly small --size fail before anything is fetched.
        crate::bootimage::resolve(
            &self.platform,
            &definition,
            &PlanOptions {
                size,
                extra_kargs: self.kargs.clone(),
                content: Default::default(),
            },
        )?;
        let opts = self.registry.resolve()?;
        let image = match &image_ref {
            // A local layout is read in place.
            ImageRef::OciDir { path, tag } => SourceImage::open(path, tag.as_deref())?,
            _ => {
                let resolved = crate::registry::resolve(&image_ref, &opts).await?;
                check_bootable_labels(&image_ref.to_string(), &resolved.config.labels())?;
                let pulled =
                    crate::pull::pull_resolved_to_cache(&resolved, &opts, self.quiet).await?;
                let dir = pulled
                    .layout_dir
                    .as_deref()
                    .context("the image cache is a directory layout")?;
                let image = SourceImage::open(dir, Some(&pulled.ref_name))?;
                match &pulled.pinned {
                    Some(pinned) => image.with_registry_origin(&pinned.to_string()),
                    None => image,
                }
            }
        };
        image.check_bootable()?;
        let output = match &self.output {
            Some(o) => o.clone(),
            None => PathBuf::from(disk::default_output_name(
                &disk::image_stem(&image.display_name),
                image.version(),
                &self.platform,
                &definition,
            )),
        };
        if output.is_dir() {
            bail!(
                "--output {} is a directory; name the image file",
                output.display()
            );
        }
        let stream_metadata = self.stream_metadata.clone().unwrap_or_else(|| {
            output
                .parent()
                .map(|p| p.join("stream.json"))
                .unwrap_or_else(|| PathBuf::from("stream.json"))
        });
        Ok(DiskSettings {
            image,
            bootimage_name: self.platform.clone(),
            definition,
            size,
            extra_kargs: self.kargs.clone(),
            stateroot: self.stateroot.clone(),
            output,
            stream_metadata,
            stream_name: self.stream_name.clone(),
            base_url: self.base_url.clone(),
        })
    }
}

fn list(args: &DiskArgs) -> Result<ExitCode> {
    let catalog = Catalog::load(args.bootimages.as_deref())?;
    for name in catalog.names() {
        let d = catalog.get(name)?;
        crate::outln!(
            "{name:10} {:32} {}",
            format!("{}, {}-byte sectors", d.format, d.sector_size),
            d.description
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: DiskArgs, cancel: &Cancel) -> Result<ExitCode> {
    if args.list {
        return list(&args);
    }
    // Fetching is async: dropped at a signal, its temporary files go with it.
    let settings = match cancel.run(args.resolve()).await {
        Err(_) if cancel.is_cancelled() => bail!(
            "{} while fetching {}: nothing was written",
            cancel.error(),
            args.image.as_deref().unwrap_or_default()
        ),
        r => r?,
    };
    let worker_cancel = cancel.clone();
    // The build checks the token itself and cleans up (staging tree, temporary output)
    // before it returns; it is awaited to the end.
    let outcome = tokio::task::spawn_blocking(move || disk::build(&settings, &worker_cancel))
        .await
        .context("disk build task")?;
    let outcome = match outcome {
        Err(_) if cancel.is_cancelled() => {
            Err(anyhow::anyhow!("{}: no image was written", cancel.error()))
        }
        other => other,
    };
    let report = outcome?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        crate::outln!(
            "wrote {} ({} bytes, sha256 {})",
            report.output.display(),
            report.size,
            report.sha256
        )?;
        crate::outln!(
            "  uncompressed sha256 {} ({} bytes), disk {} bytes",
            report.uncompressed_sha256,
            report.uncompressed_size,
            report.disk_size
        )?;
        crate::outln!(
            "  ostree commit {}; kernel arguments: {}",
            report.ostree_commit,
            report.kargs.join(" ")
        )?;
        crate::outln!(
            "  stream metadata: {} ({})",
            report.stream_metadata.display(),
            report.stream_format
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
