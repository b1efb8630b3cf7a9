//! `layerboot install-kit`: manifests, install-config pieces and pointer configs into an
//! openshift-install directory in one go (as far as its stage allows), then a summary.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::install_config::InstallConfigOptions;
use crate::cli::manifests::{self as mcli, ManifestOptions};
use crate::cli::registry_args::ImageSourceArgs;
use crate::ignition::SpecVersion;
use crate::openshift::installconfig::{InstallConfig, Patch};
use crate::openshift::installkit::{self, Stage};
use crate::openshift::manifests::{self, installdir, OutputFile};

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
    /// Print the stage, what was written and the next steps as JSON on stdout (see
    /// docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// `install-kit --json` (schema in docs/json.md).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct KitReport {
    dir: PathBuf,
    stage: &'static str,
    image: String,
    wrote: Vec<WrittenFile>,
    first_boot: Vec<String>,
    next: Vec<String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WrittenFile {
    path: PathBuf,
    what: String,
    mode: String,
    secret: bool,
}

pub async fn run(args: InstallKitArgs) -> Result<()> {
    // Everything local is validated before the network and before any write.
    let image = crate::image::registry_ref(&args.image)?;
    let spec = args
        .spec
        .as_deref()
        .map(str::parse::<SpecVersion>)
        .transpose()?;
    let (check, _) = args.manifests.settings(image.clone(), None)?;
    let stage = installkit::stage(&args.dir)?;
    let ic_path = args.dir.join("install-config.yaml");
    let ic = match stage {
        Stage::InstallConfig => Some(InstallConfig::load(&ic_path)?),
        _ => None,
    };
    let (base_patch, boot_plan) = match &ic {
        Some(ic) => args
            .install_config
            .plan(Some(ic))
            .with_context(|| ic_path.display().to_string())?,
        None => (Patch::default(), None),
    };
    // After `create manifests` the install-config is gone; the installer's Infrastructure
    // manifest still says the platform, which decides whether boot images need keeping.
    let manifests_platform = match stage {
        Stage::Manifests => installkit::manifests_platform(&args.dir)?,
        _ => None,
    };
    let reg = args.source.registry.resolve()?;
    let creds = reg.auth.merged()?;
    let pinned = crate::image::pin(&image, &reg, args.source.offline).await?;
    crate::infoln!("image: {}", pinned.image);

    if stage != Stage::InstallConfig && args.install_config.any() {
        crate::errln!("warning: install-config options ignored: `openshift-install create manifests` already consumed install-config.yaml");
    }
    let mut written: Vec<(PathBuf, OutputFile)> = Vec::new();
    match stage {
        Stage::InstallConfig => {
            let path = args.dir.join("install-config.yaml");
            let ic = ic.context("install-config loaded at its stage")?;
            let outcome = crate::openshift::installconfig::patch_file(
                &path,
                ic,
                base_patch,
                Some(&pinned.image),
                &creds,
            )?;
            for m in &outcome.messages {
                crate::errln!("{m}");
            }
            let changes = outcome.changes;
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
            let mut files = manifests::render(&settings)?;
            let keep = installkit::keep_boot_images(
                args.manifests.keep_boot_images,
                args.install_config.stream.is_some(),
                manifests_platform,
            );
            if let Some(why) = &keep {
                crate::infoln!("{why}");
                files.push(manifests::keep_boot_images_file()?);
            }
            crate::infoln!("{method_line}");
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
                crate::infoln!("{}", SpecVersion::explain(spec));
            }
            installdir::write_files(&args.dir, &files)?;
            written.extend(files.into_iter().map(|f| (args.dir.clone(), f)));
        }
    }

    let first_boot = installkit::first_boot_lines(stage, boot_plan.as_ref(), &args.manifests.pools);
    let rerun = format!(
        "layerboot install-kit {} --dir {} …(same options)",
        pinned.image,
        args.dir.display()
    );
    let next = installkit::next_steps(
        &args.dir,
        stage,
        &args.manifests.pools,
        &pinned.image.to_string(),
        &rerun,
    );
    if args.json {
        let report = KitReport {
            dir: args.dir.clone(),
            stage: match stage {
                Stage::InstallConfig => "install-config",
                Stage::Manifests => "manifests",
                Stage::IgnitionConfigs => "ignition-configs",
            },
            image: pinned.image.to_string(),
            wrote: written
                .iter()
                .map(|(root, f)| WrittenFile {
                    path: root.join(&f.rel_path),
                    what: f.what.clone(),
                    mode: format!("{:04o}", f.mode),
                    secret: f.secret,
                })
                .collect(),
            first_boot,
            next,
        };
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
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
    for line in first_boot {
        crate::outln!("{line}")?;
    }
    crate::outln!("next:")?;
    for step in next {
        crate::outln!("  {step}")?;
    }
    Ok(())
}
