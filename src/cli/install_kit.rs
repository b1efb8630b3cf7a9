//! `layerboot install-kit`: manifests, install-config pieces and pointer configs into an
//! openshift-install directory in one go (as far as its stage allows), then a summary.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::cli::install_config::{self, InstallConfigOptions};
use crate::cli::manifests::{self as mcli, ImageSourceArgs, ManifestOptions};
use crate::ignition::SpecVersion;
use crate::installkit::{self, Stage};
use crate::manifests::{self, installdir, OutputFile};

#[derive(Debug, Args)]
pub struct InstallKitArgs {
    /// The layered image (a tag is resolved to its digest first).
    pub image: String,
    /// The openshift-install directory.
    #[arg(long, value_name = "INSTALLDIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub manifests: ManifestOptions,
    #[command(flatten)]
    pub install_config: InstallConfigOptions,
    /// Ignition spec of the custom pools' pointer configs: 3.2.0 (default) .. 3.6.0.
    #[arg(long, value_name = "VERSION")]
    pub spec: Option<String>,
    #[command(flatten)]
    pub source: ImageSourceArgs,
}

pub async fn run(args: InstallKitArgs) -> Result<()> {
    // Everything local is validated before the network and before any write.
    let image = mcli::registry_ref(&args.image)?;
    let spec = args
        .spec
        .as_deref()
        .map(str::parse::<SpecVersion>)
        .transpose()?;
    let (check, _) = args.manifests.settings(image.clone(), None)?;
    let base_patch = args.install_config.patch()?;
    let stage = installkit::stage(&args.dir)?;
    let reg = args.source.registry.resolve()?;
    let creds = reg.auth.merged()?;
    let pinned = mcli::pin(&image, &reg, args.source.offline).await?;
    crate::errln!("image: {}", pinned.image);

    if stage != Stage::InstallConfig && !base_patch.is_empty() {
        crate::errln!("warning: install-config options ignored: `openshift-install create manifests` already consumed install-config.yaml");
    }
    let mut written: Vec<(PathBuf, OutputFile)> = Vec::new();
    match stage {
        Stage::InstallConfig => {
            let path = args.dir.join("install-config.yaml");
            let changes =
                install_config::patch_file(&path, base_patch, Some(&pinned.image), &creds)?;
            let what = if changes.is_empty() {
                "install-config (nothing to change)".to_string()
            } else {
                format!("install-config: {}", changes.join("; "))
            };
            written.push((
                args.dir.clone(),
                OutputFile {
                    rel_path: "install-config.yaml".into(),
                    contents: vec![],
                    mode: 0o600,
                    what,
                    secret: true,
                },
            ));
        }
        Stage::Manifests => {
            let push_auth = mcli::push_secret_auth_for(&check, &args.manifests, &creds)?;
            let (settings, method_line) =
                args.manifests.settings(pinned.image.clone(), push_auth)?;
            let files = manifests::render(&settings)?;
            crate::errln!("{method_line}");
            for w in manifests::caveats(&settings) {
                crate::errln!("warning: {w}");
            }
            installdir::write_files(&args.dir, &files)?;
            written.extend(files.into_iter().map(|f| (args.dir.clone(), f)));
        }
        Stage::IgnitionConfigs => {
            let files = installkit::pointer_files(
                &args.dir,
                &args.manifests.pools,
                spec.unwrap_or_default(),
            )?;
            if !files.is_empty() {
                crate::errln!("{}", SpecVersion::explain(spec));
            }
            installdir::write_files(&args.dir, &files)?;
            written.extend(files.into_iter().map(|f| (args.dir.clone(), f)));
        }
    }

    let stage_name = match stage {
        Stage::InstallConfig => "install-config (before `create manifests`)",
        Stage::Manifests => "manifests (after `create manifests`)",
        Stage::IgnitionConfigs => "ignition-configs (after `create ignition-configs`)",
    };
    crate::outln!("{} is at stage {stage_name}; wrote:", args.dir.display())?;
    if written.is_empty() {
        crate::outln!("  nothing (no custom pool needs a pointer config; worker.ign/master.ign are the installer's)")?;
    }
    for (root, f) in &written {
        crate::outln!("{}", mcli::summary_line(root, f))?;
    }
    crate::outln!("next:")?;
    let rerun = format!(
        "layerboot install-kit {} --dir {} …(same options)",
        pinned.image,
        args.dir.display()
    );
    for step in installkit::next_steps(&args.dir, stage, &args.manifests.pools, &rerun) {
        crate::outln!("  {step}")?;
    }
    Ok(())
}
