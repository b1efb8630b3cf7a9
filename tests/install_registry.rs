//! The install-time commands against a real loopback registry (Debian docker-registry):
//! tags resolve to digests, unknown tags are refused, labels pick `bootc switch`, and
//! credentials go exactly where they must and nowhere else.

mod install_support;
use install_support::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerboot_testkit::ostree_image;
use layerboot_testkit::registry::{LocalRegistry, Mode};

/// The digest skopeo (not layerboot) sees for `image`.
fn skopeo_digest(image: &str, authfile: &Path) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(authfile)
        .args(["--format", "{{.Digest}}", &format!("docker://{image}")])
        .output()
        .expect("skopeo runs (Debian package skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bootable ostree image *without* `containers.bootc` (as RHCOS/FCOS images from before
/// bootc carry): the ostree-ext fixture with that one label removed from its config.
fn pre_bootc_image(dir: &Path) -> PathBuf {
    use layerboot::oci::layout::OciLayout;
    use layerboot::oci::manifest::{ImageManifest, OCI_CONFIG, OCI_MANIFEST};
    let dest = dir.join("oci");
    let src = ostree_image::bootable_image().unwrap();
    copy_tree(&src, &dest);
    let layout = OciLayout::open(&dest).unwrap();
    let entry = layout.find_ref(Some(ostree_image::FIXTURE_TAG)).unwrap();
    let manifest: ImageManifest =
        serde_json::from_slice(&layout.read_blob(&entry.digest, entry.size).unwrap()).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &layout
            .read_blob(&manifest.config.digest, manifest.config.size)
            .unwrap(),
    )
    .unwrap();
    assert!(
        config["config"]["Labels"]["containers.bootc"].is_string(),
        "fixture changed: no containers.bootc label to remove"
    );
    config["config"]["Labels"]
        .as_object_mut()
        .unwrap()
        .remove("containers.bootc");
    let config_desc = layout
        .write_blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
        .unwrap();
    let m = ImageManifest {
        config: config_desc,
        ..manifest
    };
    let desc = layout
        .write_blob(OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
        .unwrap();
    layout
        .set_ref(Some(ostree_image::FIXTURE_TAG), &desc)
        .unwrap();
    dest
}

fn copy_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

/// sha256 of the manifest (or index) the registry serves for `image`, via skopeo.
fn raw_digest(image: &str, authfile: &Path) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(authfile)
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo runs (Debian package skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "sha256:{}",
        layerboot::io::sha256_reader(&out.stdout[..]).unwrap().0
    )
}

struct Env {
    reg: LocalRegistry,
    authfile: PathBuf,
    _dir: tempfile::TempDir,
}

/// A Basic-auth registry holding the plain and the bootc image, and an authfile with its
/// credentials plus an unrelated entry that must never leak into outputs.
fn env() -> Env {
    let reg = LocalRegistry::start(Mode::Basic).unwrap();
    reg.push_oci_dir(
        &ostree_image::bootable_image().unwrap(),
        "acme/rhcos-layered:4.20",
    )
    .unwrap();
    reg.push_oci_dir(
        &ostree_image::multiarch_image().unwrap(),
        "acme/multi:latest",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    reg.push_oci_dir(&pre_bootc_image(dir.path()), "acme/fcos-layered:stable")
        .unwrap();
    let mut auths: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.authfile().unwrap().unwrap()).unwrap()).unwrap();
    auths["auths"]["other.example.com"] =
        serde_json::json!({"auth": "b3RoZXI6dW5yZWxhdGVkLXNlY3JldA=="});
    let authfile = dir.path().join("auth.json");
    std::fs::write(&authfile, serde_json::to_vec(&auths).unwrap()).unwrap();
    Env {
        reg,
        authfile,
        _dir: dir,
    }
}

fn args<'a>(e: &'a Env, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--authfile".into(),
        e.authfile.display().to_string(),
        "--tls-verify=false".into(),
    ]);
    v
}

fn run(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    layerboot(&refs)
}

#[test]
fn tags_resolve_to_digests_and_unknown_tags_are_refused() {
    let e = env();
    let tagged = e.reg.image_ref("acme/rhcos-layered:4.20");
    let digest = skopeo_digest(&tagged, &e.authfile);
    let out = run(&args(
        &e,
        &[
            "manifests",
            &tagged,
            "--pool",
            "worker",
            "--pool",
            "worker-automount",
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stream = String::from_utf8(out.stdout).unwrap();
    let want = format!("osImageURL: {}/acme/rhcos-layered@{digest}", e.reg.addr());
    assert_eq!(stream.matches(&want).count(), 2, "{stream}");
    assert!(
        !stream.contains(":4.20"),
        "the tag must not reach the cluster: {stream}"
    );
    for doc in stream.split("---\n").filter(|d| !d.trim().is_empty()) {
        install_support::crd::assert_valid(&serde_yaml_ng::from_str(doc).unwrap());
    }

    // A multi-arch tag is pinned to its index digest: one osImageURL for every node arch.
    let multi = e.reg.image_ref("acme/multi:latest");
    let out = run(&args(&e, &["manifests", &multi, "--pool", "worker"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!(
        "osImageURL: {}/acme/multi@{}",
        e.reg.addr(),
        raw_digest(&multi, &e.authfile)
    );
    assert!(
        String::from_utf8(out.stdout).unwrap().contains(&want),
        "{want}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::create_dir(dir.path().join("openshift")).unwrap();
    let missing = e.reg.image_ref("acme/rhcos-layered:no-such-tag");
    let out = run(&args(
        &e,
        &[
            "manifests",
            &missing,
            "--pool",
            "worker",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
    ));
    assert_refused(&out, "no-such-tag");
    assert!(
        tree(dir.path()).is_empty(),
        "written despite the error: {:?}",
        tree(dir.path())
    );
}

#[test]
fn rebase_picks_switcher_from_labels_and_writes_only_the_needed_credentials() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    for (repo, want_switch) in [
        (
            "acme/fcos-layered:stable",
            "rpm-ostree rebase 'ostree-unverified-registry:",
        ),
        ("acme/rhcos-layered:4.20", "bootc switch '"),
    ] {
        let image = e.reg.image_ref(repo);
        let digest = skopeo_digest(&image, &e.authfile);
        let out_file = dir.path().join("rebase.ign");
        let out = run(&args(
            &e,
            &[
                "ignition",
                "rebase",
                &image,
                "-o",
                out_file.to_str().unwrap(),
            ],
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let bytes = std::fs::read(&out_file).unwrap();
        check_ignition(&bytes);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let files = v["storage"]["files"].as_array().unwrap();
        let auth = files
            .iter()
            .find(|f| f["path"] == "/etc/ostree/auth.json")
            .expect("auth.json written");
        assert_eq!(auth["mode"], 0o600);
        let auth_json: serde_json::Value = serde_json::from_slice(
            &layerboot::ignition::decode_data_url(auth["contents"]["source"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let keys: Vec<_> = auth_json["auths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, [e.reg.addr()], "only the image registry's entry");
        let script = files
            .iter()
            .find(|f| f["path"] == "/usr/local/bin/layerboot-rebase")
            .unwrap();
        let script = String::from_utf8(
            layerboot::ignition::decode_data_url(script["contents"]["source"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let pinned = format!(
            "{}/{}@{digest}",
            e.reg.addr(),
            repo.split(':').next().unwrap()
        );
        assert!(
            script.contains(&format!("{want_switch}{pinned}")),
            "{script}"
        );
        // The secret never reaches the terminal.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(layerboot_testkit::registry::TEST_PASSWORD)
                && !stderr.contains("bGF5ZXJib290"),
            "{stderr}"
        );
    }
    let image = e.reg.image_ref("acme/rhcos-layered:4.20");
    let out = run(&args(&e, &["ignition", "rebase", &image]));
    assert_refused(&out, "--show-secrets");
    assert!(out.stdout.is_empty());
}

#[test]
fn machineosconfig_push_secret_holds_only_push_credentials_and_is_0600() {
    let e = env();
    let image = e.reg.image_ref("acme/rhcos-layered:4.20");
    let push = e.reg.image_ref("acme/rendered:latest");
    let cf = repo().join("examples/autofs/Containerfile");
    let cf = cf.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::create_dir(dir.path().join("openshift")).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&args(
        &e,
        &[
            "manifests",
            &image,
            "--pool",
            "worker-automount",
            "--openshift-version",
            "4.21",
            "--push-spec",
            &push,
            "--containerfile",
            cf,
            "--dir",
            d,
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("method: machineosconfig (auto: OpenShift 4.21"),
        "{stderr}"
    );
    let secret_path = dir.path().join(
        "manifests/99_openshift-machine-config-operator_secret_layered-image-push-secret.yaml",
    );
    assert_eq!(
        std::fs::metadata(&secret_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let secret: serde_json::Value =
        serde_yaml_ng::from_slice(&std::fs::read(&secret_path).unwrap()).unwrap();
    use base64::Engine as _;
    let cfg = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(
        cfg["auths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [e.reg.addr()]
    );
    for f in tree(dir.path()) {
        let doc: serde_json::Value =
            serde_yaml_ng::from_slice(&std::fs::read(dir.path().join(&f)).unwrap()).unwrap();
        if doc["kind"] != "Secret" {
            install_support::crd::assert_valid(&doc);
            assert_eq!(
                std::fs::metadata(dir.path().join(&f))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o644,
                "{f}"
            );
        }
    }
    // Printed, the secret is redacted unless asked for.
    let out = run(&args(
        &e,
        &[
            "manifests",
            &image,
            "--pool",
            "worker",
            "--method",
            "machineosconfig",
            "--push-spec",
            &push,
            "--containerfile",
            cf,
        ],
    ));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let encoded = secret["data"][".dockerconfigjson"].as_str().unwrap();
    assert!(
        stdout.contains("REDACTED") && !stdout.contains(encoded),
        "{stdout}"
    );
    let out = run(&args(
        &e,
        &[
            "manifests",
            &image,
            "--pool",
            "worker",
            "--method",
            "machineosconfig",
            "--push-spec",
            &push,
            "--containerfile",
            cf,
            "--show-secrets",
        ],
    ));
    assert!(String::from_utf8(out.stdout).unwrap().contains(encoded));
}

#[test]
fn install_config_merges_the_image_credentials_into_the_pull_secret() {
    let e = env();
    let image = e.reg.image_ref("acme/rhcos-layered:4.20");
    let dir = tempfile::tempdir().unwrap();
    let ic = dir.path().join("install-config.yaml");
    std::fs::copy(repo().join("examples/autofs/install-config.yaml"), &ic).unwrap();
    let out = run(&args(
        &e,
        &[
            "install-config",
            &image,
            "--install-config",
            ic.to_str().unwrap(),
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::metadata(&ic).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&std::fs::read(&ic).unwrap()).unwrap();
    let ps: serde_json::Value = serde_json::from_str(v["pullSecret"].as_str().unwrap()).unwrap();
    let mut keys: Vec<_> = ps["auths"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want = vec![
        "cloud.openshift.com".to_string(),
        "quay.io".to_string(),
        e.reg.addr(),
    ];
    want.sort();
    assert_eq!(keys, want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(layerboot_testkit::registry::TEST_PASSWORD));
    // Printing the pieces redacts the pull secret.
    let out = run(&args(&e, &["install-config", &image]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("pullSecret: REDACTED"), "{stdout}");
}
