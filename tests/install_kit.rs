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
}
