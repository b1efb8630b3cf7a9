//! `layerboot pull IMAGE --to oci:DIR[:tag]|oci-archive:FILE[:tag]`.

use anyhow::Result;
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::image::inspect::human_size;
use crate::oci::reference::ImageRef;
use crate::registry::pull::Destination;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: registry/repo[:tag][@sha256:…] (optionally docker://), oci:DIR[:tag]
    /// or oci-archive:FILE[:tag].
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Destination: oci:DIR[:tag] (created or added to) or oci-archive:FILE[:tag].
    /// The tag defaults to the source's, else "latest".
    #[arg(long, value_name = "DEST")]
    pub to: String,

    /// The global -q: no progress bars and no summary line.
    #[arg(skip)]
    pub quiet: bool,

    /// Print what was pulled as JSON on stdout (see docs/json.md).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Pull; `cancel` also stops the blocking parts (local copies, archives), which the
/// caller's dropping of this future at a signal would not.
pub async fn run(args: PullArgs, cancel: crate::cancel::Cancel) -> Result<()> {
    let image: ImageRef = args.image.parse()?;
    let dest: Destination = args.to.parse()?;
    let mut opts = args.registry.resolve()?;
    opts.cancel = cancel;
    let pulled = crate::registry::pull::pull(&image, &dest, &opts, args.quiet || args.json).await?;
    if args.json {
        let s = &pulled.stats;
        let report = PullReport {
            destination: &args.to,
            manifest_digest: pulled.manifest_digest.to_string(),
            layout_digest: s.layout_digest.to_string(),
            pinned: pulled.pinned.as_ref().map(ToString::to_string),
            blobs_fetched: s.blobs_fetched,
            blobs_skipped: s.blobs_skipped,
            bytes_fetched: s.bytes_fetched,
            seconds: s.elapsed.as_secs_f64(),
        };
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else if !args.quiet {
        let s = &pulled.stats;
        let pinned = pulled
            .pinned
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        crate::outln!(
            "{} {}{pinned}: {} blobs fetched ({}), {} already present, {:.1}s",
            args.to,
            pulled.manifest_digest,
            s.blobs_fetched,
            human_size(s.bytes_fetched),
            s.blobs_skipped,
            s.elapsed.as_secs_f64()
        )?;
    }
    Ok(())
}

/// `pull --json` (schema in docs/json.md).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PullReport<'a> {
    destination: &'a str,
    manifest_digest: String,
    layout_digest: String,
    pinned: Option<String>,
    blobs_fetched: usize,
    blobs_skipped: usize,
    bytes_fetched: u64,
    seconds: f64,
}
