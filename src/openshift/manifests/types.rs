//! Typed Kubernetes objects, only the fields layerboot writes, serialized with the API's
//! field names. Empty maps and absent options are omitted, as `oc` would print them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MCO_API_VERSION: &str = "machineconfiguration.openshift.io/v1";
pub const ROLE_LABEL: &str = "machineconfiguration.openshift.io/role";
pub const PRE_BUILT_IMAGE_ANNOTATION: &str = "machineconfiguration.openshift.io/pre-built-image";
pub const MCO_NAMESPACE: &str = "openshift-machine-config-operator";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfig {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineConfigSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineConfigSpec {
    /// Digest-pinned pull spec; the MCO refuses tags here.
    #[serde(rename = "osImageURL")]
    pub os_image_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSConfig {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineOSConfigSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSConfigSpec {
    pub machine_config_pool: NameRef,
    pub image_builder: ImageBuilder,
    pub rendered_image_push_secret: NameRef,
    pub rendered_image_push_spec: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_file: Vec<MachineOSContainerfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageBuilder {
    /// The CRD's only value is `Job`.
    pub image_builder_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSContainerfile {
    /// `NoArch` applies to every architecture (the CRD default).
    pub containerfile_arch: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfigPool {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineConfigPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfigPoolSpec {
    pub machine_config_selector: LabelSelector,
    pub node_selector: LabelSelector,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// A core/v1 Secret; `data` values are base64 as the API stores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: String,
    pub data: BTreeMap<String, String>,
}

pub const OPERATOR_API_VERSION: &str = "operator.openshift.io/v1";

/// `operator.openshift.io/v1` MachineConfiguration: the MCO's knobs object, a singleton
/// named `cluster` (cluster-scoped, so no namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfiguration {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineConfigurationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfigurationSpec {
    pub managed_boot_images: ManagedBootImages,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedBootImages {
    pub machine_managers: Vec<MachineManager>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineManager {
    /// `machinesets` or `controlplanemachinesets`.
    pub resource: String,
    /// The CRD's only value is `machine.openshift.io`.
    pub api_group: String,
    pub selection: MachineManagerSelector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineManagerSelector {
    /// `All`, `Partial` or `None`.
    pub mode: String,
}
