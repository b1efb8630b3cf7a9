//! `install-kit` through the three openshift-install stages (offline, fixed digest):
//! what it writes at each, the modes, the summary and the next commands.

mod install_support;
use install_support::*;

use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_kit_follows_the_installer_stages() {
    let work = tempfile::tempdir().unwrap();
    let ocp = work.path().join("ocp");
    std::fs::create_dir(&ocp).unwrap();
    std::fs::copy(
        repo().join("examples/autofs/install-config.yaml"),
        ocp.join("install-config.yaml"),
    )
    .unwrap();
    let auth = work.path().join("auth.json");
    let image_registry = IMAGE.split('/').next().unwrap();
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{image_registry}/acme\":{{\"auth\":\"a2l0OnNlY3JldC1raXQ=\"}}}}}}"
        ),
    )
    .unwrap();
    let d = ocp.to_str().unwrap();
    let kit = |extra: &[&str]| {
        let mut a = vec![
            "install-kit",
            IMAGE,
            "--dir",
            d,
            "--pool",
            "worker",
            "--pool",
            "worker-automount",
            "--offline",
            "--authfile",
            auth.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        let out = layerboot(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("a2l0OnNlY3JldC1raXQ=") && !all.contains("secret-kit"),
            "secret printed: {all}"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let extra = [
        "--trust-bundle",
        TEST_CA,
        "--mirror",
        "quay.io/acme=mirror.example.com:5000/acme",
    ];

    // Stage 1: install-config.
    let summary = kit(&extra);
    assert!(summary.contains("stage install-config"), "{summary}");
    assert!(
        summary.contains(&format!("0600  {d}/install-config.yaml")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("openshift-install create manifests --dir {d}")),
        "{summary}"
    );
    assert_eq!(mode(&ocp.join("install-config.yaml")), 0o600);
    let ic: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&std::fs::read(ocp.join("install-config.yaml")).unwrap())
            .unwrap();
    let ps: serde_json::Value = serde_json::from_str(ic["pullSecret"].as_str().unwrap()).unwrap();
    // quay.io already holds the release credentials: the image's go under its own repository key.
    assert!(
        ps["auths"]["quay.io"]["email"].is_string(),
        "release credentials kept"
    );
    assert_eq!(ps["auths"]["quay.io/acme"]["auth"], "a2l0OnNlY3JldC1raXQ=");
    assert_eq!(ic["additionalTrustBundlePolicy"], "Always");
    assert_eq!(
        ic["imageDigestSources"][0]["mirrors"][0],
        "mirror.example.com:5000/acme"
    );
    assert_eq!(
        ic["platform"]["baremetal"]["apiVIPs"][0], "192.0.2.5",
        "other fields kept"
    );

    // Stage 2: after `create manifests`.
    std::fs::remove_file(ocp.join("install-config.yaml")).unwrap();
    std::fs::create_dir(ocp.join("manifests")).unwrap();
    std::fs::create_dir(ocp.join("openshift")).unwrap();
    let summary = kit(&extra);
    assert!(summary.contains("stage manifests"), "{summary}");
    for f in [
        "manifests/99_openshift-machineconfigpool_worker-automount.yaml",
        "openshift/99_openshift-machineconfig_99-worker-layered-image.yaml",
        "openshift/99_openshift-machineconfig_99-worker-automount-layered-image.yaml",
    ] {
        assert!(
            summary.contains(&format!("0644  {d}/{f}")),
            "{f} missing from summary: {summary}"
        );
        crd::assert_valid(
            &serde_yaml_ng::from_slice(&std::fs::read(ocp.join(f)).unwrap()).unwrap(),
        );
    }
    assert!(
        summary.contains("openshift-install create ignition-configs"),
        "{summary}"
    );
    assert!(
        summary.contains("node-role.kubernetes.io/worker-automount="),
        "{summary}"
    );

    // Stage 3: after `create ignition-configs` (worker.ign in the installer's shape).
    std::fs::remove_dir_all(ocp.join("manifests")).unwrap();
    std::fs::remove_dir_all(ocp.join("openshift")).unwrap();
    let out = layerboot(&[
        "ignition",
        "pointer",
        "--pool",
        "worker",
        "--api-vip",
        "192.0.2.5",
        "--ca",
        TEST_CA,
        "-o",
        ocp.join("worker.ign").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let summary = kit(&["--spec", "3.4.0"]);
    assert!(summary.contains("stage ignition-configs"), "{summary}");
    assert!(summary.contains(&format!("0644  {d}/worker-automount.ign  pointer Ignition (spec 3.4.0) for pool 'worker-automount': https://192.0.2.5:22623/config/worker-automount")), "{summary}");
    let ign = std::fs::read(ocp.join("worker-automount.ign")).unwrap();
    check_ignition(&ign);
    assert!(!ocp.join("worker.ign.tmp").exists());
    assert!(
        summary.contains("openshift-install wait-for bootstrap-complete"),
        "{summary}"
    );
    // Bare metal: the layered image's own live ISO, customized per pool.
    assert!(
        summary.contains(&format!("layerboot disk {IMAGE}"))
            && summary.contains("-p metal,live")
            && summary.contains("OPENSHIFT_INSTALL_OS_IMAGE_OVERRIDE"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "layerboot iso customize --dest-ignition {d}/worker-automount.ign"
        )),
        "{summary}"
    );
}

fn kit_ok(args: &[&str]) -> String {
    let out = layerboot(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// After `create manifests`, the MachineConfiguration that keeps custom boot images is
/// written where the MCO would replace them (vSphere, Azure) or when asked, and nowhere else.
#[test]
fn install_kit_keeps_custom_boot_images_where_the_mco_would_replace_them() {
    let stream = repo().join("tests/golden/stream-platforms.json");
    let stream = stream.to_str().unwrap();
    let cases: &[(&str, &[&str], bool)] = &[
        ("VSphere", &["--stream", stream], true),
        ("Azure", &["--stream", stream], true),
        ("AWS", &["--stream", stream], false),
        ("GCP", &["--stream", stream], false),
        ("VSphere", &[], false),
        ("BareMetal", &["--keep-boot-images"], true),
    ];
    for (infra, extra, written) in cases {
        let work = tempfile::tempdir().unwrap();
        let d = work.path().to_str().unwrap();
        std::fs::create_dir(work.path().join("manifests")).unwrap();
        std::fs::create_dir(work.path().join("openshift")).unwrap();
        std::fs::write(
            work.path().join("manifests/cluster-infrastructure-02-config.yml"),
            format!("apiVersion: config.openshift.io/v1\nkind: Infrastructure\nmetadata:\n  name: cluster\nspec:\n  platformSpec:\n    type: {infra}\nstatus:\n  platform: {infra}\n  platformStatus:\n    type: {infra}\n"),
        )
        .unwrap();
        let mut args = vec![
            "install-kit",
            IMAGE,
            "--dir",
            d,
            "--pool",
            "worker",
            "--offline",
        ];
        args.extend_from_slice(extra);
        let summary = kit_ok(&args);
        let f = work
            .path()
            .join("manifests/99_openshift-machineconfiguration_cluster.yaml");
        assert_eq!(f.exists(), *written, "{infra} {extra:?}: {summary}");
        assert_eq!(
            summary.contains("MachineConfiguration 'cluster'"),
            *written,
            "{summary}"
        );
        if *written {
            crd::assert_valid(&serde_yaml_ng::from_slice(&std::fs::read(&f).unwrap()).unwrap());
        }
        assert!(
            summary.contains("first boot of pool(s) worker"),
            "{summary}"
        );
    }
}

/// At the install-config stage the summary says what each machine boots first.
#[test]
fn install_kit_says_what_nodes_first_boot() {
    let stream = repo().join("tests/golden/stream-platforms.json");
    let cases = [
        (
            "openstack",
            "\n    cloud: c",
            "first boot: every openstack machine: the layered image",
        ),
        (
            "baremetal",
            "\n    apiVIPs: [192.0.2.5]",
            "the release's RHCOS (written by install_coreos)",
        ),
        ("aws", "\n    region: us-east-1", "aws ec2 register-image"),
    ];
    for (platform, extra, want) in cases {
        let work = tempfile::tempdir().unwrap();
        let d = work.path().to_str().unwrap();
        std::fs::write(
            work.path().join("install-config.yaml"),
            format!("apiVersion: v1\nbaseDomain: example.com\nmetadata:\n  name: ocp\nplatform:\n  {platform}:{extra}\npullSecret: '{{\"auths\":{{}}}}'\n"),
        )
        .unwrap();
        let summary = kit_ok(&[
            "install-kit",
            IMAGE,
            "--dir",
            d,
            "--pool",
            "worker",
            "--offline",
            "--stream",
            stream.to_str().unwrap(),
        ]);
        assert!(summary.contains(want), "{platform}: {summary}");
    }
}

/// `install-kit --json` (issue #16 item 4) after `create manifests`: the stage, the pinned
/// image, every file written (each exists, with the mode reported) and the next steps,
/// the same facts the text summary gives; `-q` leaves stderr to warnings only.
#[test]
fn install_kit_json_lists_what_it_wrote() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path().to_str().unwrap();
    std::fs::create_dir(work.path().join("manifests")).unwrap();
    std::fs::create_dir(work.path().join("openshift")).unwrap();
    let args = [
        "-q",
        "install-kit",
        IMAGE,
        "--dir",
        d,
        "--pool",
        "worker",
        "--offline",
        "--keep-boot-images",
        "--json",
    ];
    let out = layerboot(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with("warning: ")),
        "-q: only warnings on stderr: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stage"], "manifests");
    assert_eq!(v["dir"], d);
    assert!(v["image"].as_str().unwrap().contains("@sha256:"), "{v}");
    let wrote = v["wrote"].as_array().unwrap();
    assert!(wrote.len() >= 2, "{v}");
    for f in wrote {
        let p = std::path::Path::new(f["path"].as_str().unwrap());
        assert!(p.starts_with(work.path()) && p.is_file(), "{f}");
        assert_eq!(f["mode"], format!("{:04o}", mode(p)).as_str(), "{f}");
        assert!(!f["what"].as_str().unwrap().is_empty(), "{f}");
    }
    assert!(
        wrote.iter().any(|f| f["path"]
            .as_str()
            .unwrap()
            .ends_with("manifests/99_openshift-machineconfiguration_cluster.yaml")),
        "{v}"
    );
    assert!(!v["next"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["firstBoot"].is_array(), "{v}");
    // the text summary names the same files
    let work2 = tempfile::tempdir().unwrap();
    let d2 = work2.path().to_str().unwrap();
    std::fs::create_dir(work2.path().join("manifests")).unwrap();
    std::fs::create_dir(work2.path().join("openshift")).unwrap();
    let text = kit_ok(&[
        "install-kit",
        IMAGE,
        "--dir",
        d2,
        "--pool",
        "worker",
        "--offline",
        "--keep-boot-images",
    ]);
    for f in wrote {
        let rel = std::path::Path::new(f["path"].as_str().unwrap())
            .strip_prefix(work.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(text.contains(&rel), "{rel} missing from {text}");
    }
}
