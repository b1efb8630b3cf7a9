//! Manifests against the official CRDs, goldens, and the `manifests` command.

mod install_support;
use install_support::crd::*;
use install_support::*;

use layerboot::imageref::{ImageRef, RegistryRef};
use layerboot::manifests::{self, ManifestSettings, Method, PushSettings};
use serde_json::Value;

fn image() -> RegistryRef {
    match IMAGE.parse::<ImageRef>().unwrap() {
        ImageRef::Registry(r) => r,
        _ => unreachable!(),
    }
}

fn push() -> PushSettings {
    PushSettings {
        spec: "quay.io/acme/rhcos-layered-rendered:latest".into(),
        secret_name: "layered-image-push-secret".into(),
        dockerconfigjson: Some(
            br#"{"auths":{"quay.io":{"auth":"YWNtZStwdXNoOnRva2Vu"}}}"#.to_vec(),
        ),
        containerfile: Some(
            "FROM configs AS final\nRUN dnf install -y autofs && ostree container commit\n".into(),
        ),
    }
}

fn yaml_docs(files: &[manifests::OutputFile]) -> Vec<Value> {
    files
        .iter()
        .map(|f| serde_yaml_ng::from_slice(&f.contents).unwrap())
        .collect()
}

#[test]
fn every_manifest_validates_against_its_crd() {
    for method in [Method::MachineConfig, Method::MachineOsConfig] {
        let s = ManifestSettings {
            image: image(),
            pools: vec!["worker".into(), "worker-automount".into()],
            method,
            push: Some(push()),
        };
        let files = manifests::render(&s).unwrap();
        let mut kinds = Vec::new();
        for doc in yaml_docs(&files) {
            kinds.push(doc["kind"].as_str().unwrap().to_string());
            if doc["kind"] == "Secret" {
                assert_eq!(doc["type"], "kubernetes.io/dockerconfigjson");
                assert_eq!(
                    doc["metadata"]["namespace"],
                    "openshift-machine-config-operator"
                );
                continue;
            }
            assert_valid(&doc);
        }
        let want: &[&str] = match method {
            Method::MachineConfig => &["MachineConfigPool", "MachineConfig", "MachineConfig"],
            Method::MachineOsConfig => &[
                "MachineConfigPool",
                "Secret",
                "MachineOSConfig",
                "MachineOSConfig",
            ],
        };
        assert_eq!(kinds, want);
    }
}

#[test]
fn the_crd_check_catches_what_the_api_server_would_reject_or_prune() {
    let s = ManifestSettings {
        image: image(),
        pools: vec!["worker-automount".into()],
        method: Method::MachineOsConfig,
        push: Some(push()),
    };
    let docs = yaml_docs(&manifests::render(&s).unwrap());
    let mosc = docs
        .iter()
        .find(|d| d["kind"] == "MachineOSConfig")
        .unwrap()
        .clone();
    let mcp = docs
        .iter()
        .find(|d| d["kind"] == "MachineConfigPool")
        .unwrap()
        .clone();

    let mut bad = mosc.clone();
    bad["metadata"]["name"] = "other".into();
    assert!(crd_errors(&bad).iter().any(|e| e.contains("must match")));
    let mut bad = mosc.clone();
    bad["spec"]["renderedImagePushSpec"] = "quay.io/acme/no-tag".into();
    assert!(!crd_errors(&bad).is_empty(), "untagged push spec passed");
    let mut bad = mosc.clone();
    bad["spec"]["imageBuilder"]["imageBuilderType"] = "PodImageBuilder".into();
    assert!(!crd_errors(&bad).is_empty());
    let mut bad = mosc;
    bad["spec"]["machineConfigPool"]["name"] = "Bad_Name".into();
    assert!(!crd_errors(&bad).is_empty());
    let mut bad = mcp;
    bad["spec"]["nodeSelectr"] = Value::Object(Default::default());
    assert!(
        !crd_errors(&bad).is_empty(),
        "a misspelled field would be pruned silently"
    );
    let mc = manifests::machine_config("worker", IMAGE);
    let mut bad = serde_json::to_value(&mc).unwrap();
    bad["spec"]["osImageUrl"] = bad["spec"]["osImageURL"].take();
    bad["spec"].as_object_mut().unwrap().remove("osImageURL");
    assert!(!crd_errors(&bad).is_empty());
}

#[test]
fn push_spec_patterns_are_the_crds() {
    let crd = load_crd(crd_file_for("MachineOSConfig"));
    let schema = openapi_schema(&crd, "v1");
    let field = &schema["properties"]["spec"]["properties"]["renderedImagePushSpec"];
    let rule = field["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    let from_crd = cel_matches_patterns(rule);
    assert_eq!(
        from_crd,
        manifests::names::PUSH_SPEC_PATTERNS
            .map(String::from)
            .to_vec()
    );
    assert_eq!(field["maxLength"], manifests::names::PUSH_SPEC_MAX_LEN);
    let cf = &schema["properties"]["spec"]["properties"]["containerFile"]["items"]["properties"]
        ["content"];
    assert_eq!(cf["maxLength"], manifests::CONTAINERFILE_MAX_LEN);
}

#[test]
fn rendered_manifests_match_goldens() {
    for (method, name) in [
        (Method::MachineConfig, "machineconfig"),
        (Method::MachineOsConfig, "machineosconfig"),
    ] {
        let s = ManifestSettings {
            image: image(),
            pools: vec!["worker".into(), "worker-automount".into()],
            method,
            push: Some(push()),
        };
        let files = manifests::render(&s).unwrap();
        for f in &files {
            golden(
                &format!("manifests/{name}/{}", f.rel_path.display()),
                &f.contents,
            );
        }
    }
}
