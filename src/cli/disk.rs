//! `layerboot disk`: a first-boot disk image (qemu qcow2, metal, metal4k, or a user
//! definition) built from the layered image itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::bootimage::{definition::parse_size, Catalog};
use crate::disk::{self, Cancel, DiskSettings, SourceImage};
use crate::oci::reference::ImageRef;

#[derive(Debug, Args)]
pub struct DiskArgs {
    /// The layered image: registry/repo[:tag][@sha256:…] (pulled, verified, into the shared
    /// cache), oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    #[arg(required_unless_present = "list")]
    pub image: Option<String>,

    /// Boot image kind: a definition in bootimages/ (see --list) or in --bootimages.
    /// Repeat it (or separate with commas) to build several from one deployment; they must
    /// share a partition layout (all shipped ones but metal4k do).
    #[arg(
        long,
        short = 'p',
        default_value = "qemu",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub platform: Vec<String>,

    /// Directory of extra boot image definitions (NAME.toml); same names override shipped ones.
    #[arg(long, value_name = "DIR", env = "LAYERBOOT_BOOTIMAGES")]
    pub bootimages: Option<PathBuf>,

    /// Disk size, e.g. 10GiB (default: the smallest size that fits, rounded up to 256 MiB).
    #[arg(long)]
    pub size: Option<String>,

    /// Extra kernel argument (repeatable).
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,

    /// ostree stateroot ("osname") to deploy into (default: the image's com.coreos.osname
    /// label, else "default").
    #[arg(long)]
    pub stateroot: Option<String>,

    /// Output file, with one --platform (default: <image>-<version>-<platform>.x86_64.<ext>
    /// [.xz|.gz] in --output-dir, as CoreOS names its artifacts).
    #[arg(long, short = 'o', conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,

    /// Directory for the artifacts under their default names (default: here).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Stream metadata JSON to create or update (default: stream.json beside the output).
    #[arg(long, value_name = "FILE")]
    pub stream_metadata: Option<PathBuf>,

    /// Stream name written into the stream metadata.
    #[arg(long, default_value = "layered")]
    pub stream_name: String,

    /// http(s) URL of the directory the artifact will be served from: stream metadata
    /// `location` = URL/FILENAME, `signature` = URL/FILENAME.sig. Without it `location` is
    /// the bare file name, which `install-config --stream-base-url` resolves but
    /// coreos-installer and openshift-install refuse (they need absolute URLs). layerboot
    /// signs nothing: `coreos-installer download|install --stream-base-url URL` needs
    /// `--insecure`.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Print what was built as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// List the known boot image definitions (shipped and --bootimages) and exit.
    #[arg(long, conflicts_with = "image")]
    pub list: bool,

    /// The global -q.
    #[arg(skip)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl DiskArgs {
    /// Validate the arguments, check the image is bootable from its config (before any
    /// layer is fetched), then make it available in a local OCI layout.
    pub async fn resolve(&self) -> Result<DiskSettings> {
        let catalog = Catalog::load(self.bootimages.as_deref())?;
        let mut names: Vec<&str> = Vec::new();
        for p in &self.platform {
            if names.contains(&p.as_str()) {
                bail!("--platform {p} is given twice");
            }
            names.push(p);
        }
        if names.len() > 1 && self.output.is_some() {
            bail!(
                "--output names one file, and {} platforms were asked for: use --output-dir",
                names.len()
            );
        }
        let definitions = names
            .iter()
            .map(|n| Ok((n.to_string(), catalog.get(n)?.clone())))
            .collect::<Result<Vec<_>>>()?;
        // The further disks a live ISO installs offline (its definition's osmet-images).
        let mut osmet_images: Vec<(String, crate::bootimage::Definition)> = Vec::new();
        for (name, d) in &definitions {
            for o in &d.osmet_images {
                let def = catalog
                    .get(o)
                    .with_context(|| format!("boot image {name}: osmet-images"))?;
                if def.format != crate::bootimage::Format::Raw
                    || def.package != crate::bootimage::Package::None
                {
                    bail!("boot image {name}: osmet-images names {o}, which is not a raw disk");
                }
                if !osmet_images.iter().any(|(n, _)| n == o) {
                    osmet_images.push((o.clone(), def.clone()));
                }
            }
        }
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
        if let Some(st) = &self.stateroot {
            if st.is_empty()
                || !st
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!("--stateroot '{st}' must be letters, digits, '-', '_' or '.'");
            }
        }
        let base_url = self
            .base_url
            .as_deref()
            .map(crate::disk::output::parse_base_url)
            .transpose()?;
        // Kernel arguments and an impossibly small --size fail before anything is fetched.
        for (_, definition) in &definitions {
            crate::bootimage::check_request(definition, size, &self.kargs)?;
        }
        if let Some(dir) = &self.output_dir {
            if !dir.is_dir() {
                bail!("--output-dir {} is not a directory", dir.display());
            }
        }
        let opts = self.registry.resolve()?;
        let image = match &image_ref {
            // A local layout is read in place.
            ImageRef::OciDir { path, tag } => {
                let image = SourceImage::open(path, tag.as_deref())?;
                image.check_bootable()?;
                image
            }
            // Checked from the config alone, before any layer is fetched.
            _ => {
                let resolved = crate::registry::resolve(&image_ref, &opts).await?;
                crate::image::check_bootable(&image_ref.to_string(), &resolved.config.labels())?;
                super::local_source(&image_ref, &resolved, &opts, self.quiet).await?
            }
        };
        let output = match (&self.output, &self.output_dir) {
            (Some(file), _) => disk::OutputChoice::File(file.clone()),
            (None, Some(dir)) => disk::OutputChoice::Dir(dir.clone()),
            (None, None) => disk::OutputChoice::Dir(PathBuf::new()),
        };
        Ok(DiskSettings {
            image,
            bootimages: definitions,
            osmet_images,
            output,
            size,
            extra_kargs: self.kargs.clone(),
            stateroot: self.stateroot.clone(),
            stream_metadata: self.stream_metadata.clone(),
            stream_name: self.stream_name.clone(),
            base_url,
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
    let outcome = tokio::task::spawn_blocking(move || {
        disk::plan(settings).and_then(|plan| disk::build(&plan, &worker_cancel))
    })
    .await
    .context("disk build task")?;
    let outcome = match outcome {
        Err(_) if cancel.is_cancelled() => {
            Err(anyhow::anyhow!("{}: no image was written", cancel.error()))
        }
        other => other,
    };
    let reports = outcome?;
    // Only once the build succeeded: a failing one prints its one-line error alone.
    if args.base_url.is_none() {
        if let Some(r) = reports.first() {
            log::warn!(
                "no --base-url: {} names the artifacts by their bare file names, which coreos-installer and openshift-install cannot fetch",
                r.stream_metadata.display()
            );
        }
    }
    if args.json {
        // One platform: the report object (the schema since the first release); several:
        // an array of them, in --platform order.
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        crate::outln!("{json}")?;
    } else {
        for report in &reports {
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
            for o in &report.other_artifacts {
                crate::outln!(
                    "wrote {} ({} bytes, sha256 {}; stream {} {})",
                    o.output.display(),
                    o.size,
                    o.sha256,
                    o.stream_format,
                    o.stream_entry
                )?;
            }
            if let Some(l) = &report.live {
                crate::outln!(
                    "  live ISO {}: kernel arguments {}; installs {}; minimal ISO {}; installer configs {}",
                    l.volume_id,
                    l.kernel_arguments,
                    if l.offline_install {
                        "offline (osmet) or from --image-url"
                    } else {
                        "from --image-url/--image-file only (no osmet)"
                    },
                    if l.minimal_iso {
                        "extractable (coreos-installer iso extract minimal-iso)"
                    } else {
                        "not extractable (the image has no coreos-installer)"
                    },
                    if l.installer_config {
                        "run (the image has coreos-installer)"
                    } else {
                        "not run (the image has no coreos-installer)"
                    }
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
