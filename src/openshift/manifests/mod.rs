//! Install-time manifests that put a pre-built layered image on the nodes of one or more
//! pools, and where openshift-install expects them.
//!
//! Two documented methods:
//! - **MachineConfig** (every 4.x): per pool a MachineConfig with the role label and
//!   `spec.osImageURL`, in `openshift/99_openshift-machineconfig_<name>.yaml`, the
//!   installer's own naming for the MachineConfigs it writes (`99-worker-ssh` becomes
//!   `openshift/99_openshift-machineconfig_99-worker-ssh.yaml`). Our MachineConfig is named
//!   `99-<pool>-layered-image`: the MCO merges MachineConfigs in name order and the last
//!   `osImageURL` wins, so a `99-` name sorts after the installer's and the MCO's own.
//! - **MachineOSConfig install-time image mode** (OpenShift ≥ 4.21): per pool a
//!   MachineOSConfig named like its pool with the `pre-built-image` annotation, plus the
//!   push Secret, in `manifests/` (`manifests/99_openshift-machineosconfig_<pool>.yaml`,
//!   `manifests/99_openshift-machine-config-operator_secret_<name>.yaml`).
//!
//! A custom pool (anything but worker/master/arbiter) also gets its MachineConfigPool in
//! `manifests/99_openshift-machineconfigpool_<pool>.yaml`: the MCO bootstrap renders
//! pools from the bootstrap manifests (bootkube copies `openshift/` into `manifests/`, so
//! both directories reach it), and the pool must exist before its MachineOSConfig.

pub(crate) mod installdir;
pub mod names;
pub(crate) mod types;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use crate::oci::reference::RegistryRef;
use types::*;

/// How the image reaches the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    MachineConfig,
    MachineOsConfig,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::MachineConfig => "machineconfig",
            Method::MachineOsConfig => "machineosconfig",
        })
    }
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodChoice {
    Machineconfig,
    Machineosconfig,
    Auto,
}

/// An OpenShift `4.N` (a patch level is accepted and ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenShiftVersion {
    pub major: u32,
    pub minor: u32,
}

/// The first release with MachineOSConfig install-time image mode.
pub const MOSC_INSTALL_TIME_SINCE: OpenShiftVersion = OpenShiftVersion {
    major: 4,
    minor: 21,
};

impl FromStr for OpenShiftVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split('.');
        let parse = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        match (parse(parts.next()), parse(parts.next())) {
            (Some(4), Some(minor))
                if parts.clone().count() <= 1 && parts.all(|p| p.parse::<u32>().is_ok()) =>
            {
                Ok(OpenShiftVersion { major: 4, minor })
            }
            _ => bail!("invalid OpenShift version '{s}': expected 4.N (e.g. 4.21)"),
        }
    }
}

impl fmt::Display for OpenShiftVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Resolve `auto`. Without a version we assume a release before 4.21 and pick
/// MachineConfig: it works on every 4.x, whereas a MachineOSConfig with the pre-built-image
/// annotation is silently ignored by an older MCO and the nodes would keep the stock image.
pub fn choose_method(
    choice: MethodChoice,
    version: Option<OpenShiftVersion>,
) -> Result<(Method, String)> {
    Ok(match (choice, version) {
        (MethodChoice::Machineconfig, _) => (Method::MachineConfig, "as requested".into()),
        (MethodChoice::Machineosconfig, Some(v)) if v < MOSC_INSTALL_TIME_SINCE => {
            bail!("--method machineosconfig needs OpenShift ≥ {MOSC_INSTALL_TIME_SINCE} (install-time image mode), but --openshift-version is {v}: use --method machineconfig")
        }
        (MethodChoice::Machineosconfig, _) => (Method::MachineOsConfig, "as requested".into()),
        (MethodChoice::Auto, Some(v)) if v >= MOSC_INSTALL_TIME_SINCE => {
            (Method::MachineOsConfig, format!("auto: OpenShift {v} ≥ {MOSC_INSTALL_TIME_SINCE} has install-time image mode"))
        }
        (MethodChoice::Auto, Some(v)) => (Method::MachineConfig, format!("auto: OpenShift {v} < {MOSC_INSTALL_TIME_SINCE}")),
        (MethodChoice::Auto, None) => (
            Method::MachineConfig,
            format!("auto: no --openshift-version given, assuming < {MOSC_INSTALL_TIME_SINCE}; MachineConfig works on every 4.x"),
        ),
    })
}

/// Where the MachineConfiguration that keeps custom boot images goes: `manifests/`, which
/// bootkube applies once the MCO's CRDs exist, named like the installer's other operator
/// configuration manifests.
pub const KEEP_BOOT_IMAGES_PATH: &str = "manifests/99_openshift-machineconfiguration_cluster.yaml";

/// The MachineConfiguration that opts every MachineAPI MachineSet out of boot image
/// management, so the MCO never swaps the custom boot image for the release's stock one.
/// ControlPlaneMachineSets are left out: their management is opt-in (off unless listed).
pub fn keep_boot_images() -> MachineConfiguration {
    MachineConfiguration {
        api_version: OPERATOR_API_VERSION.into(),
        kind: "MachineConfiguration".into(),
        metadata: ObjectMeta {
            name: "cluster".into(),
            ..Default::default()
        },
        spec: MachineConfigurationSpec {
            managed_boot_images: ManagedBootImages {
                machine_managers: vec![MachineManager {
                    resource: "machinesets".into(),
                    api_group: "machine.openshift.io".into(),
                    selection: MachineManagerSelector {
                        mode: "None".into(),
                    },
                }],
            },
        },
    }
}

/// The MachineConfiguration manifest as an output file.
pub fn keep_boot_images_file() -> Result<OutputFile> {
    Ok(OutputFile {
        rel_path: PathBuf::from(KEEP_BOOT_IMAGES_PATH),
        contents: to_yaml(&keep_boot_images())?,
        mode: 0o644,
        what: "MachineConfiguration 'cluster': MachineSets opted out of boot image management (the custom boot image stays)".into(),
        secret: false,
    })
}

/// The MachineOSConfig method's extra inputs.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Tagged pull spec where the MCO pushes images it builds later for these pools.
    pub spec: String,
    pub secret_name: String,
    /// `{"auths":{…}}` with the push registry's credentials; `None` when the Secret already
    /// exists in the cluster and is not ours to write.
    pub dockerconfigjson: Option<Vec<u8>>,
    /// Optional Containerfile kept in the MachineOSConfig for later on-cluster rebuilds.
    pub containerfile: Option<String>,
}

/// Validated input for [`render`].
#[derive(Debug, Clone)]
pub struct ManifestSettings {
    /// Must carry a digest.
    pub image: RegistryRef,
    pub pools: Vec<String>,
    pub method: Method,
    pub push: Option<PushSettings>,
}

/// One file to write under an installer directory.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// Relative to the installer directory.
    pub rel_path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// One-line description for summaries.
    pub what: String,
    /// Holds credentials: never printed without --show-secrets, written 0600.
    pub secret: bool,
}

/// Why the MachineOSConfig method refuses to go without a Containerfile.
pub const CONTAINERFILE_REQUIRED: &str = "the machineosconfig method needs --containerfile FILE (the Containerfile the image was built from): after install the MCO rebuilds the pool's image from the MachineOSConfig's containerFile on every upgrade or MachineConfig change, and a rebuild without it drops the customization; or use --method machineconfig";

/// The CRD's limit on `containerFile[].content`.
pub const CONTAINERFILE_MAX_LEN: usize = 4096;

/// Check the pool list before anything is rendered: names, duplicates, control plane.
pub fn validate_pools(pools: &[String]) -> Result<()> {
    if pools.is_empty() {
        bail!("no pool given: pass --pool worker (or a custom pool name)");
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in pools {
        names::validate_pool_name(p)?;
        names::validate_not_control_plane(p)?;
        if !seen.insert(p.as_str()) {
            bail!("duplicate pool '{p}'");
        }
    }
    Ok(())
}

/// The MachineOSConfig method's inputs, against the CRD's rules.
pub fn validate_push(push: &PushSettings) -> Result<()> {
    names::validate_push_spec(&push.spec)?;
    if !names::is_dns1123_subdomain(&push.secret_name) {
        bail!(
            "invalid push secret name '{}': must be a DNS-1123 subdomain",
            push.secret_name
        );
    }
    if let Some(cf) = &push.containerfile {
        if cf.len() > CONTAINERFILE_MAX_LEN {
            bail!("Containerfile is {} bytes; the MachineOSConfig CRD allows at most {CONTAINERFILE_MAX_LEN}", cf.len());
        }
    }
    Ok(())
}

/// Render every manifest for `s`, in a stable order. Pure: nothing is written.
pub fn render(s: &ManifestSettings) -> Result<Vec<OutputFile>> {
    validate_pools(&s.pools)?;
    let Some(digest) = &s.image.digest else {
        bail!(
            "image '{}' is not pinned by digest; OpenShift needs osImageURL@sha256:…",
            s.image
        );
    };
    let image = s.image.pinned(digest).to_string();
    let mut out = Vec::new();
    for pool in s.pools.iter().filter(|p| names::is_custom_pool(p)) {
        let mcp = machine_config_pool(pool);
        out.push(OutputFile {
            rel_path: PathBuf::from(format!(
                "manifests/99_openshift-machineconfigpool_{pool}.yaml"
            )),
            contents: to_yaml(&mcp)?,
            mode: 0o644,
            what: format!("MachineConfigPool '{pool}' (custom pool, inherits worker)"),
            secret: false,
        });
    }
    match s.method {
        Method::MachineConfig => {
            for pool in &s.pools {
                let mc = machine_config(pool, &image);
                out.push(OutputFile {
                    rel_path: PathBuf::from(format!(
                        "openshift/99_openshift-machineconfig_{}.yaml",
                        mc.metadata.name
                    )),
                    contents: to_yaml(&mc)?,
                    mode: 0o644,
                    what: format!(
                        "MachineConfig '{}': osImageURL for pool '{pool}'",
                        mc.metadata.name
                    ),
                    secret: false,
                });
            }
        }
        Method::MachineOsConfig => {
            let push = s.push.as_ref().context(
                "the machineosconfig method needs --push-spec (a tagged pull spec the MCO pushes later builds to); or use --method machineconfig",
            )?;
            validate_push(push)?;
            if push
                .containerfile
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
            {
                bail!("{CONTAINERFILE_REQUIRED}");
            }
            if let Some(auths) = &push.dockerconfigjson {
                let secret = push_secret(&push.secret_name, auths);
                out.push(OutputFile {
                    rel_path: PathBuf::from(format!(
                        "manifests/99_openshift-machine-config-operator_secret_{}.yaml",
                        push.secret_name
                    )),
                    contents: to_yaml(&secret)?,
                    mode: 0o600,
                    what: format!(
                        "Secret '{}' in {MCO_NAMESPACE}: push credentials for {}",
                        push.secret_name, push.spec
                    ),
                    secret: true,
                });
            }
            for pool in &s.pools {
                let mosc = machine_os_config(pool, &image, push);
                out.push(OutputFile {
                    rel_path: PathBuf::from(format!(
                        "manifests/99_openshift-machineosconfig_{pool}.yaml"
                    )),
                    contents: to_yaml(&mosc)?,
                    mode: 0o644,
                    what: format!("MachineOSConfig '{pool}': pre-built image for pool '{pool}'"),
                    secret: false,
                });
            }
        }
    }
    Ok(out)
}

/// The name we give the MachineConfig of `pool`.
pub fn machine_config_name(pool: &str) -> String {
    format!("99-{pool}-layered-image")
}

pub fn machine_config(pool: &str, image: &str) -> MachineConfig {
    MachineConfig {
        api_version: MCO_API_VERSION.into(),
        kind: "MachineConfig".into(),
        metadata: ObjectMeta {
            name: machine_config_name(pool),
            labels: BTreeMap::from([(ROLE_LABEL.into(), pool.into())]),
            ..Default::default()
        },
        spec: MachineConfigSpec {
            os_image_url: image.into(),
        },
    }
}

pub fn machine_config_pool(pool: &str) -> MachineConfigPool {
    MachineConfigPool {
        api_version: MCO_API_VERSION.into(),
        kind: "MachineConfigPool".into(),
        metadata: ObjectMeta {
            name: pool.into(),
            // The label the MCO puts on its own pools, so KubeletConfig/ContainerRuntimeConfig
            // selectors can target this pool the same way.
            labels: BTreeMap::from([(
                format!("pools.operator.machineconfiguration.openshift.io/{pool}"),
                String::new(),
            )]),
            ..Default::default()
        },
        spec: MachineConfigPoolSpec {
            // Inherit every worker MachineConfig and add the pool's own.
            machine_config_selector: LabelSelector {
                match_expressions: vec![LabelSelectorRequirement {
                    key: ROLE_LABEL.into(),
                    operator: "In".into(),
                    values: vec!["worker".into(), pool.into()],
                }],
                ..Default::default()
            },
            node_selector: LabelSelector {
                match_labels: BTreeMap::from([(
                    format!("node-role.kubernetes.io/{pool}"),
                    String::new(),
                )]),
                ..Default::default()
            },
        },
    }
}

pub fn machine_os_config(pool: &str, image: &str, push: &PushSettings) -> MachineOSConfig {
    MachineOSConfig {
        api_version: MCO_API_VERSION.into(),
        kind: "MachineOSConfig".into(),
        metadata: ObjectMeta {
            // The CRD's CEL rule: name == spec.machineConfigPool.name.
            name: pool.into(),
            annotations: BTreeMap::from([(PRE_BUILT_IMAGE_ANNOTATION.into(), image.into())]),
            ..Default::default()
        },
        spec: MachineOSConfigSpec {
            machine_config_pool: NameRef { name: pool.into() },
            image_builder: ImageBuilder {
                image_builder_type: "Job".into(),
            },
            rendered_image_push_secret: NameRef {
                name: push.secret_name.clone(),
            },
            rendered_image_push_spec: push.spec.clone(),
            container_file: push
                .containerfile
                .iter()
                .map(|c| MachineOSContainerfile {
                    containerfile_arch: "NoArch".into(),
                    content: c.clone(),
                })
                .collect(),
        },
    }
}

pub fn push_secret(name: &str, dockerconfigjson: &[u8]) -> Secret {
    Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(MCO_NAMESPACE.into()),
            ..Default::default()
        },
        type_: "kubernetes.io/dockerconfigjson".into(),
        data: BTreeMap::from([(
            ".dockerconfigjson".into(),
            base64::engine::general_purpose::STANDARD.encode(dockerconfigjson),
        )]),
    }
}

pub fn to_yaml<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_yaml_ng::to_string(v)
        .context("serializing manifest")?
        .into_bytes())
}

/// The documented caveats of running nodes on a custom image, for stderr.
pub fn caveats(s: &ManifestSettings) -> Vec<String> {
    let pools = s.pools.join(", ");
    let mut w = vec![
        "build the layered image FROM the rhel-coreos digest of the exact release you install \
         (`oc adm release info --image-for rhel-coreos <release>`); another base can fail the install"
            .to_string(),
        format!(
            "do not combine a realtime kernel or RPM extensions installed in the layer with MachineConfig \
             spec.kernelType/spec.extensions for pool(s) {pools}: they conflict"
        ),
    ];
    w.push(match s.method {
        Method::MachineConfig => format!(
            "you own updates: nodes of pool(s) {pools} stay on this image across cluster upgrades until you rebuild it \
             from the new release's rhel-coreos and update osImageURL"
        ),
        Method::MachineOsConfig => format!(
            "after install the MCO builds pool(s) {pools} on the cluster (image mode) and pushes to the push spec; \
             the pre-built image's pull credentials must be in install-config pullSecret"
        ),
    });
    let custom: Vec<&str> = s
        .pools
        .iter()
        .filter(|p| names::is_custom_pool(p))
        .map(String::as_str)
        .collect();
    if s.method == Method::MachineOsConfig && !custom.is_empty() {
        // openshift/enhancements machine-config/install-time-support-for-image-mode-on-openshift.md:
        // Tech Preview covers master and worker; custom pools are a GA criterion.
        w.push(format!(
            "custom pool(s) {} with a MachineOSConfig at install time are not supported by every release \
             (install-time image mode started with master and worker only): check your release's documentation, \
             or use --method machineconfig for them",
            custom.join(", ")
        ));
    }
    w
}

/// All files as one multi-document YAML stream (for stdout). Secrets are redacted unless
/// `show_secrets`.
pub fn to_stream(files: &[OutputFile], show_secrets: bool) -> Result<String> {
    let mut s = String::new();
    for f in files {
        s.push_str("---\n");
        if f.secret && !show_secrets {
            let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&f.contents)?;
            if let Some(data) = v.get_mut("data").and_then(|d| d.as_mapping_mut()) {
                for (_, val) in data.iter_mut() {
                    *val = serde_yaml_ng::Value::String("REDACTED (pass --show-secrets)".into());
                }
            }
            s.push_str(&serde_yaml_ng::to_string(&v)?);
        } else {
            s.push_str(std::str::from_utf8(&f.contents).context("manifest is not UTF-8")?);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RegistryRef {
        match "quay.io/acme/rhcos-layered@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".parse().unwrap() {
            crate::oci::reference::ImageRef::Registry(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn method_choice_table() {
        let v = |s: &str| Some(s.parse::<OpenShiftVersion>().unwrap());
        let cases = [
            (MethodChoice::Auto, None, Some(Method::MachineConfig)),
            (MethodChoice::Auto, v("4.20"), Some(Method::MachineConfig)),
            (MethodChoice::Auto, v("4.21"), Some(Method::MachineOsConfig)),
            (
                MethodChoice::Auto,
                v("4.22.3"),
                Some(Method::MachineOsConfig),
            ),
            (
                MethodChoice::Machineconfig,
                v("4.22"),
                Some(Method::MachineConfig),
            ),
            (
                MethodChoice::Machineosconfig,
                None,
                Some(Method::MachineOsConfig),
            ),
            (MethodChoice::Machineosconfig, v("4.18"), None),
        ];
        for (choice, ver, want) in cases {
            assert_eq!(
                choose_method(choice, ver).ok().map(|x| x.0),
                want,
                "{choice:?} {ver:?}"
            );
        }
        for bad in ["5.1", "4", "4.x", "", "4.21.1.1"] {
            assert!(bad.parse::<OpenShiftVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pools_are_checked_before_rendering() {
        let mk = |pools: &[&str]| ManifestSettings {
            image: image(),
            pools: pools.iter().map(|s| s.to_string()).collect(),
            method: Method::MachineConfig,
            push: None,
        };
        assert!(render(&mk(&["worker", "worker"]))
            .unwrap_err()
            .to_string()
            .contains("duplicate pool 'worker'"));
        assert!(render(&mk(&["Infra"]))
            .unwrap_err()
            .to_string()
            .contains("'Infra'"));
        assert!(render(&mk(&["master-x"]))
            .unwrap_err()
            .to_string()
            .contains("control-plane"));
        let files = render(&mk(&["worker", "infra"])).unwrap();
        let paths: Vec<_> = files
            .iter()
            .map(|f| f.rel_path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "manifests/99_openshift-machineconfigpool_infra.yaml",
                "openshift/99_openshift-machineconfig_99-worker-layered-image.yaml",
                "openshift/99_openshift-machineconfig_99-infra-layered-image.yaml"
            ]
        );
    }

    #[test]
    fn secrets_are_redacted_in_stream() {
        let s = ManifestSettings {
            image: image(),
            pools: vec!["worker".into()],
            method: Method::MachineOsConfig,
            push: Some(PushSettings {
                spec: "quay.io/acme/os-image:worker".into(),
                secret_name: "push-secret".into(),
                dockerconfigjson: Some(
                    br#"{"auths":{"quay.io":{"auth":"c2VjcmV0OnNlY3JldA=="}}}"#.to_vec(),
                ),
                containerfile: Some("FROM configs AS final\n".into()),
            }),
        };
        let files = render(&s).unwrap();
        let secret = files.iter().find(|f| f.secret).unwrap();
        assert_eq!(secret.mode, 0o600);
        let redacted = to_stream(&files, false).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(br#"{"auths":{"quay.io":{"auth":"c2VjcmV0OnNlY3JldA=="}}}"#);
        assert!(
            !redacted.contains(&b64) && redacted.contains("REDACTED"),
            "{redacted}"
        );
        assert!(to_stream(&files, true).unwrap().contains(&b64));
    }
}
