//! `layerboot ignition …` end to end: goldens, the real ignition-validate, the typed round trip.

mod install_support;
use install_support::*;

#[test]
fn pointer_goldens_for_every_spec_and_endpoint() {
    let endpoints: [(&str, &[&str]); 3] = [
        (
            "cluster",
            &["--cluster", "ocp", "--base-domain", "example.com"],
        ),
        ("vip4", &["--api-vip", "192.0.2.10"]),
        ("vip6", &["--api-vip", "fd00:1::5"]),
    ];
    for spec in ["3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"] {
        for (label, ep) in endpoints {
            let mut args = vec![
                "ignition",
                "pointer",
                "--pool",
                "worker-automount",
                "--ca",
                TEST_CA,
                "--spec",
                spec,
            ];
            args.extend_from_slice(ep);
            let out = layerboot(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("Ignition spec {spec} (requested)")),
                "{stderr}"
            );
            check_ignition(&out.stdout);
            golden(
                &format!("pointer/worker-automount-{label}-{spec}.ign"),
                &out.stdout,
            );
        }
    }
}

#[test]
fn pointer_default_spec_is_explained_and_from_reuses_endpoint_and_ca() {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker.ign");
    let out = layerboot(&[
        "ignition",
        "pointer",
        "--pool",
        "worker",
        "--cluster",
        "ocp",
        "--base-domain",
        "example.com",
        "--ca",
        TEST_CA,
        "-o",
        worker.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Ignition spec 3.2.0 (default)") && stderr.contains("openshift-install"),
        "{stderr}"
    );
    let bytes = std::fs::read(&worker).unwrap();
    check_ignition(&bytes);
    golden("pointer/worker-cluster-default.ign", &bytes);

    let out = layerboot(&[
        "ignition",
        "pointer",
        "--pool",
        "infra",
        "--from",
        worker.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["ignition"]["config"]["merge"][0]["source"],
        "https://api-int.ocp.example.com:22623/config/infra"
    );
    let w: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["ignition"]["security"], w["ignition"]["security"]);
}

#[test]
fn rebase_goldens_for_every_spec() {
    let g = repo().join("tests/golden/rebase");
    let dir = tempfile::tempdir().unwrap();
    for spec in ["3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"] {
        let out_file = dir.path().join(format!("rebase-{spec}.ign"));
        let out = layerboot(&[
            "ignition",
            "rebase",
            IMAGE,
            "--offline",
            "--spec",
            spec,
            "--authfile",
            g.join("auth.json").to_str().unwrap(),
            "--ssh-key",
            g.join("id_ed25519.pub").to_str().unwrap(),
            "--merge",
            g.join("user.ign").to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("YWNtZStyb2JvdDpGQUtFLVRPS0VO") && !stderr.contains("FAKE-TOKEN"),
            "{stderr}"
        );
        let bytes = std::fs::read(&out_file).unwrap();
        check_ignition(&bytes);
        golden(&format!("rebase/rebase-{spec}.ign"), &bytes);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["passwd"]["users"][0]["name"], "core");
        let merged = layerboot::ignition::decode_data_url(
            v["ignition"]["config"]["merge"][0]["source"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            merged,
            std::fs::read(g.join("user.ign")).unwrap(),
            "merged config kept byte for byte"
        );
        let auth = &v["storage"]["files"][0];
        let auth_json: serde_json::Value = serde_json::from_slice(
            &layerboot::ignition::decode_data_url(auth["contents"]["source"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth_json["auths"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["quay.io/acme"],
            "only the entry for the image"
        );
        let unit = v["systemd"]["units"][0]["contents"].as_str().unwrap();
        assert!(
            unit.contains("ConditionPathExists=!/var/lib/layerboot/rebase.stamp"),
            "{unit}"
        );
    }
}

#[test]
fn rebase_refuses_a_merge_config_newer_than_the_output() {
    let g = repo().join("tests/golden/rebase");
    let dir = tempfile::tempdir().unwrap();
    let newer = dir.path().join("newer.ign");
    std::fs::write(&newer, r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    let out = layerboot(&[
        "ignition",
        "rebase",
        IMAGE,
        "--offline",
        "--authfile",
        g.join("auth.json").to_str().unwrap(),
        "--merge",
        newer.to_str().unwrap(),
        "-o",
        dir.path().join("x.ign").to_str().unwrap(),
    ]);
    assert_refused(&out, "newer.ign");
    assert!(!dir.path().join("x.ign").exists());
}
