//! `layerboot inspect IMAGE [--json]`.

use anyhow::{Context, Result};
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::imageref::ImageRef;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: registry/repo[:tag][@sha256:…] (optionally docker://), oci:DIR[:tag]
    /// or oci-archive:FILE[:tag].
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Print the report as JSON (stable shape; see README).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: InspectArgs) -> Result<()> {
    let image: ImageRef = args.image.parse()?;
    let opts = args.registry.resolve()?;
    let resolved = crate::registry::resolve(&image, &opts).await?;
    let report = crate::inspect::report(&image, &resolved, &opts);
    let out = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        )
    } else {
        crate::inspect::render_text(&report)
    };
    crate::out!("{out}")?;
    Ok(())
}
