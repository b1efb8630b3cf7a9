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
use crate::manifests::installdir::InstallDir;
use crate::manifests::{names, OutputFile};

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
pub fn next_steps(dir: &Path, stage: Stage, pools: &[String], rerun: &str) -> Vec<String> {
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
            for p in &custom {
                steps.push(format!(
                    "layerboot iso customize --dest-ignition {d}/{p}.ign --dest-device /dev/sda rhcos-live.iso -o {p}.iso    # or serve {d}/{p}.ign over http"
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
