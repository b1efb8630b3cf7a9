//! Manifests against the official CRDs, goldens, and the `manifests` command.

mod install_support;
use install_support::crd::*;
use install_support::*;

use layerboot::oci::reference::{ImageRef, RegistryRef};
use layerboot::openshift::manifests::{self, ManifestSettings, Method, PushSettings};
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

/// The MachineConfiguration that keeps custom boot images: golden, valid against the CRD,
/// and the CRD translation is neither too loose nor too strict for its rules.
#[test]
fn keep_boot_images_manifest_validates_against_its_crd() {
    let f = manifests::keep_boot_images_file().unwrap();
    assert_eq!(
        f.rel_path.to_str().unwrap(),
        "manifests/99_openshift-machineconfiguration_cluster.yaml"
    );
    golden(
        &format!("manifests/keep-boot-images/{}", f.rel_path.display()),
        &f.contents,
    );
    let doc: Value = serde_yaml_ng::from_slice(&f.contents).unwrap();
    assert_valid(&doc);
    assert_eq!(doc["metadata"]["name"], "cluster");
    assert_eq!(
        doc["spec"]["managedBootImages"]["machineManagers"][0]["selection"]["mode"],
        "None"
    );

    let set = |path: &[&str], v: Value| {
        let mut d = doc.clone();
        let mut cur = &mut d;
        for p in &path[..path.len() - 1] {
            cur = match p.parse::<usize>() {
                Ok(i) => &mut cur[i],
                Err(_) => &mut cur[*p],
            };
        }
        cur[path[path.len() - 1]] = v;
        d
    };
    let mm = ["spec", "managedBootImages", "machineManagers", "0"];
    let with = |tail: &[&str], v: Value| {
        let mut p = mm.to_vec();
        p.extend_from_slice(tail);
        set(&p, v)
    };
    let partial = serde_json::json!({"machineResourceSelector": {"matchLabels": {"a": "b"}}});
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "mode Sometimes",
            with(&["selection", "mode"], "Sometimes".into()),
            false,
        ),
        (
            "apiGroup other",
            with(&["apiGroup"], "cluster.x-k8s.io".into()),
            false,
        ),
        (
            "partial with mode None",
            with(&["selection", "partial"], partial.clone()),
            false,
        ),
        (
            "mode Partial with partial",
            {
                let d = with(&["selection", "mode"], "Partial".into());
                let mut d2 = d.clone();
                d2["spec"]["managedBootImages"]["machineManagers"][0]["selection"]["partial"] =
                    partial.clone();
                d2
            },
            true,
        ),
        (
            "mode Partial without partial",
            with(&["selection", "mode"], "Partial".into()),
            false,
        ),
        (
            "controlplanemachinesets All",
            {
                let d = with(&["resource"], "controlplanemachinesets".into());
                let mut d2 = d.clone();
                d2["spec"]["managedBootImages"]["machineManagers"][0]["selection"]["mode"] =
                    "All".into();
                d2
            },
            true,
        ),
        (
            "controlplanemachinesets Partial",
            {
                let mut d = with(&["resource"], "controlplanemachinesets".into());
                d["spec"]["managedBootImages"]["machineManagers"][0]["selection"] =
                    serde_json::json!({"mode": "Partial", "partial": partial});
                d
            },
            false,
        ),
        (
            "misspelled field",
            set(&["spec", "managedBootImage"], serde_json::json!({})),
            false,
        ),
        (
            "status claims Automatic skew enforcement",
            set(
                &["status"],
                serde_json::json!({"bootImageSkewEnforcementStatus": {"mode": "Automatic"}}),
            ),
            false,
        ),
        (
            "wrong kind group",
            set(&["apiVersion"], "operator.openshift.io/v1".into()),
            true,
        ),
    ];
    for (name, manifest, ok) in cases {
        let errors = crd_errors(&manifest);
        assert_eq!(errors.is_empty(), ok, "{name}: {errors:?}");
    }
}

/// The 4.21 documented method: containerFile is required, custom pools are warned about.
#[test]
fn machineosconfig_needs_a_containerfile_and_warns_on_custom_pools() {
    for (containerfile, ok) in [
        (None, false),
        (Some("   \n"), false),
        (Some("FROM configs AS final\n"), true),
    ] {
        let mut p = push();
        p.containerfile = containerfile.map(String::from);
        let s = ManifestSettings {
            image: image(),
            pools: vec!["worker".into()],
            method: Method::MachineOsConfig,
            push: Some(p),
        };
        match manifests::render(&s) {
            Ok(files) => {
                assert!(ok, "{containerfile:?} accepted");
                let mosc: Value = serde_yaml_ng::from_slice(
                    &files
                        .iter()
                        .find(|f| f.rel_path.to_string_lossy().contains("machineosconfig_"))
                        .unwrap()
                        .contents,
                )
                .unwrap();
                assert_eq!(
                    mosc["spec"]["containerFile"][0]["containerfileArch"],
                    "NoArch"
                );
                assert_eq!(
                    mosc["spec"]["containerFile"][0]["content"],
                    containerfile.unwrap()
                );
            }
            Err(e) => {
                assert!(!ok, "{containerfile:?} refused: {e}");
                assert!(e.to_string().contains("--containerfile"), "{e}");
            }
        }
    }
    for (pools, warned) in [(vec!["worker"], false), (vec!["worker", "infra"], true)] {
        let s = ManifestSettings {
            image: image(),
            pools: pools.iter().map(|p| p.to_string()).collect(),
            method: Method::MachineOsConfig,
            push: Some(push()),
        };
        let w = manifests::caveats(&s);
        assert_eq!(
            w.iter().any(|x| x.contains("custom pool(s) infra")),
            warned,
            "{pools:?}: {w:?}"
        );
    }
}
