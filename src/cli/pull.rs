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

pub async fn run(args: PullArgs) -> Result<()> {
    let image: ImageRef = args.image.parse()?;
    let dest: Destination = args.to.parse()?;
    let opts = args.registry.resolve()?;
    // On Ctrl-C the pull future is dropped, which removes its temporary files.
    let pulled = tokio::select! {
        r = crate::pull::pull(&image, &dest, &opts, args.quiet) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: no partial blob was left in {}", args.to),
    };
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
