//! The fan-out definitions in `deploy/` (issue #16 item 6): a Tekton Pipeline, an Indexed
//! Kubernetes Job and a GitHub Actions matrix, each building one boot image per platform
//! with layerboot's container image.
//!
//! The Job is validated by `kubernetes-validate` (the Kubernetes JSON schemas, strict) and
//! the workflow by `check-jsonschema` (SchemaStore's GitHub workflow schema), both installed
//! by `.ci/install-deps`; each validator is first shown to reject a broken copy. Tekton
//! publishes no schema for its kinds (its CRDs preserve unknown fields; its webhook
//! validates), so the Pipeline is checked here structurally: every parameter and workspace
//! it references is declared. Every platform any of them names is a shipped boot image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator(name: &str) -> PathBuf {
    let dir = std::env::var_os("LAYERBOOT_VALIDATORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/layerboot-validators"));
    let bin = dir.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} missing: run .ci/install-deps",
        bin.display()
    );
    bin
}

fn run(cmd: &Path, args: &[&str], file: &Path) -> Output {
    Command::new(cmd).args(args).arg(file).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn shipped_boot_images() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("bootimages"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect()
}

fn assert_known(platforms: &[String], what: &str) {
    let known = shipped_boot_images();
    assert!(!platforms.is_empty(), "{what}: no platforms");
    for p in platforms {
        assert!(
            known.contains(p),
            "{what}: '{p}' is not a shipped boot image ({known:?})"
        );
    }
}

/// `file` passes the validator and a copy with `from` replaced by `to` does not.
fn validates_and_rejects(cmd: &Path, args: &[&str], file: &Path, from: &str, to: &str) {
    let ok = run(cmd, args, file);
    assert!(ok.status.success(), "{}: {}", file.display(), text(&ok));
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join(file.file_name().unwrap());
    let original = std::fs::read_to_string(file).unwrap();
    assert!(original.contains(from), "{from} not in {}", file.display());
    std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
    let bad = run(cmd, args, &broken);
    let out = text(&bad);
    assert!(
        !bad.status.success() || out.contains("ERROR"),
        "the validator took a broken copy ({from} → {to}): {out}"
    );
}

#[test]
fn kubernetes_job_validates_and_indexes_known_platforms() {
    let file = repo().join("deploy/kubernetes/boot-images-job.yaml");
    let kv = validator("kubernetes-validate");
    let args = ["--strict", "--kubernetes-version", "1.33.0"];
    validates_and_rejects(
        &kv,
        &args,
        &file,
        "completionMode: Indexed",
        "completionMod: Indexed",
    );
    // kubernetes-validate exits 0 after an ERROR line on some failures: the pass is said.
    let ok = text(&run(&kv, &args, &file));
    assert!(
        ok.contains("passed for resource job/layerboot-boot-images"),
        "{ok}"
    );

    let job: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let container = &spec["template"]["spec"]["containers"][0];
    let env = |name: &str| {
        container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no env {name}"))
            .to_string()
    };
    let platforms: Vec<String> = env("PLATFORMS")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_known(&platforms, "Job PLATFORMS");
    assert_eq!(
        spec["completions"].as_u64(),
        Some(platforms.len() as u64),
        "one completion per platform"
    );
    assert_eq!(container["securityContext"]["privileged"], true);
    let script = container["args"][0].as_str().unwrap();
    assert!(
        script.contains("${platforms[$JOB_COMPLETION_INDEX]}"),
        "{script}"
    );
    assert!(script.contains("layerboot -q disk \"$IMAGE\""), "{script}");
}

#[test]
fn github_workflow_validates_and_runs_known_platforms() {
    let file = repo().join("deploy/github-actions/boot-images.yml");
    let cj = validator("check-jsonschema");
    let args = ["--builtin-schema", "vendor.github-workflows"];
    validates_and_rejects(&cj, &args, &file, "runs-on:", "runs_on:");
    let wf: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let platforms: Vec<String> = wf["jobs"]["disk"]["strategy"]["matrix"]["platform"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_known(&platforms, "workflow matrix");
    let steps = serde_yaml_ng::to_string(&wf["jobs"]["disk"]["steps"]).unwrap();
    assert!(steps.contains("--privileged"), "{steps}");
    assert!(steps.contains("-p \"${{ matrix.platform }}\""), "{steps}");
}

/// Every `$(params.NAME…)` in `doc` names a declared parameter.
fn params_used(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = doc;
    while let Some(i) = rest.find("$(params.") {
        let tail = &rest[i + "$(params.".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tekton_pipeline_fans_out_one_taskrun_per_platform() {
    let file = repo().join("deploy/tekton/layerboot.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (task, pipeline) = (find("Task"), find("Pipeline"));
    for d in [task, pipeline] {
        assert_eq!(d["apiVersion"], "tekton.dev/v1");
    }
    let task_params = names(&task["spec"]["params"]);
    let task_text = serde_yaml_ng::to_string(task).unwrap();
    for p in params_used(&task_text) {
        assert!(task_params.contains(&p), "Task uses undeclared param {p}");
    }
    let task_ws = names(&task["spec"]["workspaces"]);
    for w in ["output", "registry-auth"] {
        assert!(task_ws.contains(w), "Task workspace {w}");
        assert!(
            task_text.contains(&format!("$(workspaces.{w}.")),
            "Task never uses {w}"
        );
    }
    assert_eq!(
        task["spec"]["steps"][0]["securityContext"]["privileged"],
        true
    );

    let pipeline_params = names(&pipeline["spec"]["params"]);
    let pipeline_text = serde_yaml_ng::to_string(pipeline).unwrap();
    for p in params_used(&pipeline_text) {
        assert!(
            pipeline_params.contains(&p),
            "Pipeline uses undeclared param {p}"
        );
    }
    let pt = &pipeline["spec"]["tasks"][0];
    assert_eq!(pt["taskRef"]["name"], task["metadata"]["name"]);
    // The matrix fans out over the platforms; every param the Pipeline passes is the Task's,
    // and the Task's required ones (no default) are all given.
    let matrix = &pt["matrix"]["params"][0];
    assert_eq!(matrix["name"], "platform");
    assert_eq!(matrix["value"], "$(params.platforms[*])");
    let given: BTreeSet<String> = names(&pt["params"])
        .into_iter()
        .chain(["platform".to_string()])
        .collect();
    assert!(
        given.is_subset(&task_params),
        "{given:?} vs {task_params:?}"
    );
    for p in task["spec"]["params"].as_sequence().unwrap() {
        if p.get("default").is_none() {
            let name = p["name"].as_str().unwrap();
            assert!(given.contains(name), "required Task param {name} not given");
        }
    }
    let ws_given = names(&pt["workspaces"]);
    assert_eq!(ws_given, task_ws);
    let platforms: Vec<String> = pipeline["spec"]["params"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "platforms")
        .unwrap()["default"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_known(&platforms, "Pipeline platforms");
    // The Task's script runs layerboot disk with the platform and the output workspace.
    let script = task["spec"]["steps"][0]["script"].as_str().unwrap();
    assert!(
        script.contains("args=(disk \"$IMAGE\" -p \"$PLATFORM\" --output-dir \"$OUT\" --json)"),
        "{script}"
    );
}
