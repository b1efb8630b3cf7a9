//! `layerboot ignition …` end to end: goldens, the real ignition-validate, the typed round trip.

mod install_support;
use install_support::*;

#[test]
fn pointer_goldens_for_every_spec_and_endpoint() {
    let endpoints: [(&str, &[&str]); 3] = [
        ("cluster", &["--cluster", "ocp", "--base-domain", "example.com"]),
        ("vip4", &["--api-vip", "192.0.2.10"]),
        ("vip6", &["--api-vip", "fd00:1::5"]),
    ];
    for spec in ["3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"] {
        for (label, ep) in endpoints {
            let mut args = vec!["ignition", "pointer", "--pool", "worker-automount", "--ca", TEST_CA, "--spec", spec];
            args.extend_from_slice(ep);
            let out = layerboot(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(&format!("Ignition spec {spec} (requested)")), "{stderr}");
            check_ignition(&out.stdout);
            golden(&format!("pointer/worker-automount-{label}-{spec}.ign"), &out.stdout);
        }
    }
}

#[test]
fn pointer_default_spec_is_explained_and_from_reuses_endpoint_and_ca() {
    let dir = tempfile::tempdir().unwrap();
    let worker = dir.path().join("worker.ign");
    let out = layerboot(&["ignition", "pointer", "--pool", "worker", "--cluster", "ocp", "--base-domain", "example.com", "--ca", TEST_CA, "-o", worker.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Ignition spec 3.2.0 (default)") && stderr.contains("openshift-install"), "{stderr}");
    let bytes = std::fs::read(&worker).unwrap();
    check_ignition(&bytes);
    golden("pointer/worker-cluster-default.ign", &bytes);

    let out = layerboot(&["ignition", "pointer", "--pool", "infra", "--from", worker.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ignition"]["config"]["merge"][0]["source"], "https://api-int.ocp.example.com:22623/config/infra");
    let w: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["ignition"]["security"], w["ignition"]["security"]);
}
