//! `install-kit`: everything the layered image needs, put into an openshift-install
//! directory at whatever stage it is in, then a summary and the next commands.
//!
//! openshift-install consumes its inputs stage by stage: `create manifests` eats
//! install-config.yaml, `create ignition-configs` eats manifests/ and openshift/ and
//! generates the cluster's root CA into worker.ign. So each layerboot output has exactly
//! one stage where it can be added, and install-kit adds all that the directory's current
//! stage allows:
//! 1. install-config.yaml present: pullSecret, additionalTrustBundle, imageDigestSources,
//!    clusterOSImage/bootstrapOSImage;
//! 2. manifests/ + openshift/ present: MachineConfig or MachineOSConfig (+ push Secret)
//!    and the custom MachineConfigPools;
//! 3. worker.ign present: a pointer config `<pool>.ign` per custom pool, with the CA and
//!    endpoint of the installer's worker.ign.
//!
//! Run it again with the same arguments after each openshift-install step; the summary
//! says which step comes next.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ignition::pointer::{self, CaSource, PointerSettings};
use crate::ignition::SpecVersion;
use crate::openshift::installconfig::platform::{BootImagePlan, BootPlatform};
use crate::openshift::manifests::installdir::InstallDir;
use crate::openshift::manifests::{names, OutputFile};

/// The stage an installer directory is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    InstallConfig,
    Manifests,
    IgnitionConfigs,
}

/// Which stage `dir` is in (after [`InstallDir::open`] accepted it, or with worker.ign).
pub fn stage(dir: &Path) -> Result<Stage> {
    if dir.join("worker.ign").is_file()
        && !dir.join("install-config.yaml").exists()
        && !dir.join("manifests").exists()
    {
        return Ok(Stage::IgnitionConfigs);
    }
    let d = InstallDir::open(dir)?;
    if d.has_manifests {
        d.require_manifests()?;
        Ok(Stage::Manifests)
    } else {
        Ok(Stage::InstallConfig)
    }
}

/// The platform the installer's Infrastructure manifest names
/// (`manifests/cluster-infrastructure-02-config.yml`, written by `create manifests`);
/// `None` when the file is absent or names a platform without boot images here.
pub fn manifests_platform(dir: &Path) -> Result<Option<BootPlatform>> {
    let path = dir.join("manifests/cluster-infrastructure-02-config.yml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))?;
    let t = [
        v.get("status")
            .and_then(|s| s.get("platformStatus"))
            .and_then(|s| s.get("type")),
        v.get("spec")
            .and_then(|s| s.get("platformSpec"))
            .and_then(|s| s.get("type")),
        v.get("status").and_then(|s| s.get("platform")),
    ]
    .into_iter()
    .flatten()
    .find_map(|x| x.as_str());
    Ok(t.and_then(BootPlatform::from_infrastructure_type))
}

/// Whether to write the MachineConfiguration that keeps custom boot images, and why (for
/// stderr): when asked, or when boot images came from a stream on a platform whose boot
/// image management would replace them.
pub fn keep_boot_images(
    asked: bool,
    custom_boot_image: bool,
    platform: Option<BootPlatform>,
) -> Option<String> {
    match (asked, platform) {
        (true, Some(p)) if !p.replaces_custom_boot_images() => Some(format!(
            "keeping boot images as asked (--keep-boot-images); on {p} the MCO would not replace a custom boot image anyway"
        )),
        (true, _) => Some("keeping boot images as asked (--keep-boot-images)".into()),
        (false, Some(p)) if custom_boot_image && p.replaces_custom_boot_images() => Some(format!(
            "platform {p}: the MCO's boot image management would replace the custom boot image on upgrade; writing the MachineConfiguration that opts MachineSets out"
        )),
        _ => None,
    }
}

/// What each node boots first, for the summary.
pub fn first_boot_lines(
    stage: Stage,
    plan: Option<&BootImagePlan>,
    pools: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(plan) = plan {
        out.push(format!("first boot: {}", plan.first_boot));
        for n in &plan.notes {
            out.push(format!("  {n}"));
        }
        if !plan.import_commands.is_empty() {
            out.push("import the artifact first (not run; set the $VARIABLES):".into());
            for c in &plan.import_commands {
                out.push(format!("  {c}"));
            }
        }
    }
    if stage == Stage::Manifests {
        out.push(format!(
            "first boot of pool(s) {}: the machine's boot image, then the MCO's first-boot switch to the layered image unless the boot image already is it (one extra reboot)",
            pools.join(", ")
        ));
    }
    out
}

/// Pointer configs for the custom pools, next to the installer's worker.ign.
pub fn pointer_files(dir: &Path, pools: &[String], spec: SpecVersion) -> Result<Vec<OutputFile>> {
    let worker = dir.join("worker.ign");
    let bytes = std::fs::read(&worker).with_context(|| format!("reading {}", worker.display()))?;
    let mut out = Vec::new();
    for pool in pools.iter().filter(|p| names::is_custom_pool(p)) {
        let s = PointerSettings {
            pool: pool.clone(),
            endpoint: None,
            ca: CaSource::PointerIgnition(bytes.clone()),
            spec,
        };
        let contents = pointer::render(&s).with_context(|| worker.display().to_string())?;
        let existing = pointer::read_existing(&bytes, "worker.ign")?;
        out.push(OutputFile {
            rel_path: PathBuf::from(format!("{pool}.ign")),
            contents,
            mode: 0o644,
            what: format!(
                "pointer Ignition (spec {spec}) for pool '{pool}': {}",
                pointer::source_url(&existing.base_url, pool)
            ),
            secret: false,
        });
    }
    Ok(out)
}

/// The commands to run after this stage.
pub fn next_steps(
    dir: &Path,
    stage: Stage,
    pools: &[String],
    image: &str,
    rerun: &str,
) -> Vec<String> {
    let d = dir.display();
    let custom: Vec<&String> = pools.iter().filter(|p| names::is_custom_pool(p)).collect();
    let mut steps = Vec::new();
    match stage {
        Stage::InstallConfig => {
            steps.push(format!("openshift-install create manifests --dir {d}"));
            steps.push(format!("{rerun}    # adds the manifests"));
        }
        Stage::Manifests => {
            steps.push(format!(
                "openshift-install create cluster --dir {d}    # installer-provisioned: done here"
            ));
            steps.push(format!(
                "openshift-install create ignition-configs --dir {d}    # user-provisioned, then:"
            ));
            if !custom.is_empty() {
                steps.push(format!(
                    "{rerun}    # adds the pointer configs of the custom pools"
                ));
            }
        }
        Stage::IgnitionConfigs => {
            // Bare metal boots the layered image from its first boot when its live ISO is
            // made from it (docs/live.md); the live system installs it offline.
            steps.push(format!(
                "layerboot disk {image} -p metal,live --output-dir {d}/images    # the layered image's own live ISO and PXE set (UPI bare metal; agent-based: OPENSHIFT_INSTALL_OS_IMAGE_OVERRIDE=<the .iso> openshift-install agent create image)"
            ));
            for p in pools {
                steps.push(format!(
                    "layerboot iso customize --dest-ignition {d}/{p}.ign --dest-device /dev/sda {d}/images/<image>-live.x86_64.iso -o {p}.iso    # or serve {d}/{p}.ign over http"
                ));
            }
            steps.push(format!(
                "openshift-install wait-for bootstrap-complete --dir {d}"
            ));
            steps.push(format!(
                "openshift-install wait-for install-complete --dir {d}"
            ));
        }
    }
    for p in custom.iter().filter(|_| stage != Stage::InstallConfig) {
        steps.push(format!(
            "oc label node <node> node-role.kubernetes.io/{p}=    # nodes join pool '{p}' by this label (IPI: set it in the MachineSet template)"
        ));
    }
    steps
}
