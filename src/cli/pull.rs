//! `layerboot pull IMAGE --to oci:DIR[:tag]|oci-archive:FILE[:tag]`.

use anyhow::Result;
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::imageref::ImageRef;
use crate::inspect::human_size;
use crate::pull::Destination;

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

    /// No progress bars and no summary line.
    #[arg(short, long)]
    pub quiet: bool,

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
    let pulled = crate::pull::pull(&image, &dest, &opts, args.quiet).await?;
    if !args.quiet {
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
