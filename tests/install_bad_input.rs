//! Item 9: bad input gives one clear `error:` line naming the culprit, a non-zero exit,
//! and nothing written. All of these are refused before any registry access.

mod install_support;
use install_support::*;

use std::path::Path;

/// An installer directory after `create manifests`, plus files to check nothing changes.
fn manifests_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("manifests")).unwrap();
    std::fs::create_dir(d.path().join("openshift")).unwrap();
    std::fs::write(
        d.path().join("manifests/cluster-config.yaml"),
        "kind: ConfigMap\n",
    )
    .unwrap();
    d
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    tree(dir)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

#[test]
fn bad_input_table() {
    let d = manifests_dir();
    let dir = d.path().to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let bad_pem = s.join("bad-ca.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_pem = s.join("notes.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let ic_bad_yaml = s.join("install-config.yaml");
    std::fs::write(&ic_bad_yaml, "apiVersion: v1\nmetadata: [unclosed\n").unwrap();
    let ic_bad_secret = s.join("ic-bad-secret.yaml");
    std::fs::write(&ic_bad_secret, "apiVersion: v1\nmetadata:\n  name: ocp\nbaseDomain: example.com\npullSecret: '{\"auths\": {oops'\n").unwrap();
    let bad_authfile = s.join("auth.json");
    std::fs::write(&bad_authfile, "{\"auths\": {\"quay.io\": ").unwrap();
    let good_authfile = s.join("good-auth.json");
    std::fs::write(
        &good_authfile,
        "{\"auths\": {\"quay.io\": {\"auth\": \"dTpw\"}}}",
    )
    .unwrap();
    let long_cf = s.join("Containerfile");
    std::fs::write(
        &long_cf,
        format!("FROM configs AS final\n{}", "RUN true\n".repeat(600)),
    )
    .unwrap();
    let long_cf = long_cf.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().to_str().unwrap();
    let pre = tempfile::tempdir().unwrap();
    std::fs::write(
        pre.path().join("install-config.yaml"),
        "apiVersion: v1\nmetadata:\n  name: ocp\n",
    )
    .unwrap();
    let pre_dir = pre.path().to_str().unwrap();

    let (bad_pem, not_pem, ic_bad_yaml, ic_bad_secret, bad_authfile, good_authfile) = (
        bad_pem.to_str().unwrap(),
        not_pem.to_str().unwrap(),
        ic_bad_yaml.to_str().unwrap(),
        ic_bad_secret.to_str().unwrap(),
        bad_authfile.to_str().unwrap(),
        good_authfile.to_str().unwrap(),
    );
    let missing_ic = s.join("missing/install-config.yaml");
    let missing_ic = missing_ic.to_str().unwrap();
    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        // invalid CA PEM
        (
            s,
            vec![
                "ignition",
                "pointer",
                "--pool",
                "worker",
                "--api-vip",
                "192.0.2.5",
                "--ca",
                bad_pem,
                "-o",
                "out.ign",
            ],
            "bad-ca.pem",
        ),
        (
            s,
            vec![
                "ignition",
                "pointer",
                "--pool",
                "worker",
                "--api-vip",
                "192.0.2.5",
                "--ca",
                not_pem,
            ],
            "notes.txt",
        ),
        (
            s,
            vec![
                "install-config",
                "--trust-bundle",
                bad_pem,
                "--install-config",
                ic_bad_secret,
            ],
            "bad-ca.pem",
        ),
        // unknown spec version
        (
            s,
            vec![
                "ignition",
                "pointer",
                "--pool",
                "worker",
                "--api-vip",
                "192.0.2.5",
                "--ca",
                TEST_CA,
                "--spec",
                "3.9.0",
            ],
            "'3.9.0'",
        ),
        (
            s,
            vec!["ignition", "rebase", IMAGE, "--spec", "2.2.0"],
            "'2.2.0'",
        ),
        // uppercase pool name
        (
            d.path(),
            vec!["manifests", IMAGE, "--pool", "Worker", "--dir", dir],
            "'Worker'",
        ),
        (
            s,
            vec![
                "ignition",
                "pointer",
                "--pool",
                "Infra",
                "--api-vip",
                "192.0.2.5",
                "--ca",
                TEST_CA,
            ],
            "'Infra'",
        ),
        (
            d.path(),
            vec!["install-kit", IMAGE, "--pool", "GPU", "--dir", dir],
            "'GPU'",
        ),
        // other pool rules
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "infra",
                "--pool",
                "infra",
                "--dir",
                dir,
            ],
            "duplicate pool 'infra'",
        ),
        (
            d.path(),
            vec!["manifests", IMAGE, "--pool", "master-gpu", "--dir", dir],
            "'master-gpu'",
        ),
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--method",
                "machineosconfig",
                "--push-spec",
                "quay.io/acme/rendered",
                "--dir",
                dir,
            ],
            "quay.io/acme/rendered",
        ),
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--method",
                "machineosconfig",
                "--openshift-version",
                "4.19",
                "--dir",
                dir,
            ],
            "4.19",
        ),
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--openshift-version",
                "5.1",
                "--dir",
                dir,
            ],
            "'5.1'",
        ),
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--method",
                "machineosconfig",
                "--push-spec",
                "quay.io/a/r:latest",
                "--push-secret-name",
                "Bad_Secret",
                "--dir",
                dir,
            ],
            "'Bad_Secret'",
        ),
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--method",
                "machineosconfig",
                "--push-spec",
                "quay.io/a/r:latest",
                "--containerfile",
                long_cf,
                "--dir",
                dir,
            ],
            "4096",
        ),
        // the 4.21 method without the Containerfile a later rebuild needs
        (
            d.path(),
            vec![
                "manifests",
                IMAGE,
                "--pool",
                "worker",
                "--method",
                "machineosconfig",
                "--push-spec",
                "quay.io/a/r:latest",
                "--dir",
                dir,
            ],
            "--containerfile",
        ),
        // malformed pull-secret JSON: in the install-config, and as an authfile
        (
            s,
            vec![
                "install-config",
                IMAGE,
                "--install-config",
                ic_bad_secret,
                "--authfile",
                good_authfile,
            ],
            "pullSecret",
        ),
        (
            s,
            vec![
                "install-config",
                IMAGE,
                "--install-config",
                ic_bad_secret,
                "--authfile",
                bad_authfile,
            ],
            "auth.json",
        ),
        // missing or unparsable install-config
        (
            s,
            vec![
                "install-config",
                "--mirror",
                "quay.io/a=m.example.com/a",
                "--install-config",
                missing_ic,
            ],
            "missing/install-config.yaml",
        ),
        (
            s,
            vec![
                "install-config",
                "--mirror",
                "quay.io/a=m.example.com/a",
                "--install-config",
                ic_bad_yaml,
            ],
            "install-config.yaml: not valid YAML",
        ),
        // a --dir that is not an installer directory
        (
            empty.path(),
            vec!["manifests", IMAGE, "--pool", "worker", "--dir", empty_dir],
            "not an openshift-install directory",
        ),
        (
            empty.path(),
            vec!["install-kit", IMAGE, "--pool", "worker", "--dir", empty_dir],
            "not an openshift-install directory",
        ),
        (
            empty.path(),
            vec![
                "install-config",
                "--mirror",
                "quay.io/a=m.example.com/a",
                "--dir",
                empty_dir,
            ],
            "not an openshift-install directory",
        ),
        // manifests before `create manifests`
        (
            pre.path(),
            vec!["manifests", IMAGE, "--pool", "worker", "--dir", pre_dir],
            "openshift-install create manifests",
        ),
    ];
    for (where_, args, culprit) in cases {
        let mut full: Vec<&str> = args.clone();
        if !full.contains(&"--authfile")
            && matches!(
                full[0],
                "manifests" | "install-kit" | "install-config" | "ignition"
            )
            && full[1] != "pointer"
        {
            full.extend(["--authfile", good_authfile]);
        }
        let before = snapshot(where_);
        // Relative outputs (-o out.ign) land in `where_`.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerboot"))
            .args(&full)
            .current_dir(where_)
            .output()
            .unwrap();
        assert_refused(&out, culprit);
        assert!(
            out.stdout.is_empty(),
            "printed output despite the error: {full:?}"
        );
        assert_eq!(
            snapshot(where_),
            before,
            "files changed despite the error: {full:?}"
        );
        assert!(!where_.join("out.ign").exists());
    }
}
