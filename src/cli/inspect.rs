//! `layerboot inspect IMAGE [--json]`.

use anyhow::{Context, Result};
use clap::Args;

use super::registry_args::RegistryArgs;
use crate::oci::reference::ImageRef;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: registry/repo[:tag][@sha256:…] (optionally docker://), oci:DIR[:tag]
    /// or oci-archive:FILE[:tag].
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Print the report as JSON (stable shape; see docs/json.md).
    #[arg(long)]
    pub json: bool,

    /// Also read the image's own files (platforms.json, image.json, SELinux config) from
    /// its layers: a registry image is pulled into the cache for it. Local `oci:` layouts
    /// are always read.
    #[arg(long)]
    pub content: bool,

    /// The global -q.
    #[arg(skip)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: InspectArgs) -> Result<()> {
    let image: ImageRef = args.image.parse()?;
    let opts = args.registry.resolve()?;
    let resolved = crate::registry::resolve(&image, &opts).await?;
    let mut report = crate::image::inspect::report(&image, &resolved, &opts);
    if args.content || matches!(image, ImageRef::OciDir { .. }) {
        let source = super::local_source(&image, &resolved, &opts, args.quiet).await;
        let content = source.and_then(|s| crate::image::inspect::read_content(&s));
        match content {
            Ok(c) => report.content = Some(c),
            Err(e) if args.content => return Err(e.context("reading the image's files")),
            // A local layout that cannot be read as one image (an index, say) still has
            // its manifest reported.
            Err(e) => report.warnings.push(format!(
                "image files not read: {}",
                crate::output::one_line(&format!("{e:#}"))
            )),
        }
    }
    let out = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        )
    } else {
        crate::image::inspect::render_text(&report)
    };
    crate::out!("{out}")?;
    Ok(())
}
