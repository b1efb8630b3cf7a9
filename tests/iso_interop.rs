//! Interop with the real coreos-installer 0.27, both ways. A missing coreos-installer
//! fails these tests (install it with .ci/install-deps).

mod iso_support;

use iso_support::*;

/// The customization options both tools share, applied to `iso` by the given tool.
fn shared_options(i: &Inputs) -> Vec<String> {
    [
        "--live-ignition",
        s(&i.live_ign),
        "--dest-ignition",
        s(&i.dest_ign),
        "--dest-device",
        "/dev/vda",
        "--dest-karg-append",
        "nosmt",
        "--dest-karg-append",
        "mitigations=auto",
        "--dest-console",
        "ttyS0,115200n8",
        "--network-keyfile",
        s(&i.keyfile),
        "--ignition-ca",
        s(&i.ca),
        "--live-karg-append",
        "layerboot.test=1",
        "--live-karg-delete",
        "quiet",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn args<'a>(head: &[&'a str], tail: &'a [String]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(tail.iter().map(String::as_str))
        .collect()
}

#[test]
fn same_inputs_give_byte_identical_isos() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let opts = shared_options(&i);
    let fixture = fixture();
    let ours = dir.path().join("ours.iso");
    let theirs = dir.path().join("theirs.iso");
    layerboot_ok(&args(
        &["iso", "customize", s(&fixture), "-o", s(&ours)],
        &opts,
    ));
    coreos_ok(&args(
        &["iso", "customize", s(&fixture), "-o", s(&theirs)],
        &opts,
    ));
    assert!(
        contents(&ours) != contents(&fixture),
        "customize changed nothing"
    );
    assert!(
        contents(&ours) == contents(&theirs),
        "layerboot and coreos-installer produced different ISOs for the same inputs"
    );
}

/// Forced re-customization of an already customized ISO: same bytes as coreos-installer,
/// whether or not the new run edits kernel arguments.
#[test]
fn forced_recustomization_matches_coreos_installer() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let ours = copy_fixture(dir.path(), "ours.iso");
    let theirs = copy_fixture(dir.path(), "theirs.iso");
    for iso in [&ours, &theirs] {
        coreos_ok(&[
            "iso",
            "customize",
            "--live-karg-append",
            "first=1",
            "--live-ignition",
            s(&i.live_ign),
            s(iso),
        ]);
    }
    let rounds: [&[&str]; 2] = [
        &[
            "--dest-ignition",
            s(&i.dest_ign),
            "--dest-device",
            "/dev/vda",
        ],
        &[
            "--live-karg-append",
            "second=2",
            "--live-karg-delete",
            "quiet",
        ],
    ];
    for opts in rounds {
        layerboot_ok(&args(
            &["iso", "customize", "--force", s(&ours)],
            &opts.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        ));
        coreos_ok(&args(
            &["iso", "customize", "--force", s(&theirs)],
            &opts.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        ));
        assert!(
            contents(&ours) == contents(&theirs),
            "forced re-customization with {opts:?} differs from coreos-installer's"
        );
    }
    let kargs = String::from_utf8(coreos_ok(&["iso", "kargs", "show", s(&ours)])).unwrap();
    assert!(
        kargs.contains("second=2") && !kargs.contains("first=1") && !kargs.contains(" quiet"),
        "{kargs}"
    );
}

#[test]
fn what_layerboot_embeds_reads_back_in_coreos_installer() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let iso = copy_fixture(dir.path(), "ours.iso");
    layerboot_ok(&args(&["iso", "customize", s(&iso)], &shared_options(&i)));
    let report = show_json_with_secrets(&iso);

    let ign = coreos_ok(&["iso", "ignition", "show", s(&iso)]);
    assert_eq!(
        String::from_utf8(ign).unwrap(),
        report["ignition"].as_str().unwrap()
    );
    let kargs = String::from_utf8(coreos_ok(&["iso", "kargs", "show", s(&iso)])).unwrap();
    let want = liveiso::DEFAULT_KARGS.replace(" quiet", "") + " layerboot.test=1";
    assert_eq!(kargs, format!("{want}\n"));
    assert_eq!(report["kargs"]["current"], want);
    let default =
        String::from_utf8(coreos_ok(&["iso", "kargs", "show", "--default", s(&iso)])).unwrap();
    assert_eq!(default, format!("{}\n", liveiso::DEFAULT_KARGS));
    let net = String::from_utf8(coreos_ok(&["iso", "network", "extract", s(&iso)])).unwrap();
    assert_eq!(
        net,
        format!("########## eth0.nmconnection ##########\n{KEYFILE}")
    );

    // coreos-installer sees it as customized, and its reset gives back the pristine ISO
    let out = coreos(&["iso", "customize", "--live-karg-append", "x", s(&iso)]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("already customized")
    );
    coreos_ok(&["iso", "reset", s(&iso)]);
    assert!(
        contents(&iso) == contents(&fixture()),
        "file contents differ"
    );
}

#[test]
fn what_coreos_installer_embeds_reads_back_in_layerboot() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());

    // iso customize
    let iso = copy_fixture(dir.path(), "theirs.iso");
    coreos_ok(&args(&["iso", "customize", s(&iso)], &shared_options(&i)));
    let report = show_json_with_secrets(&iso);
    assert_eq!(report["customized"], true);
    let ign = String::from_utf8(coreos_ok(&["iso", "ignition", "show", s(&iso)])).unwrap();
    assert_eq!(report["ignition"].as_str().unwrap(), ign);
    let kargs = String::from_utf8(coreos_ok(&["iso", "kargs", "show", s(&iso)])).unwrap();
    assert_eq!(
        format!("{}\n", report["kargs"]["current"].as_str().unwrap()),
        kargs
    );
    assert_eq!(report["network_keyfiles"]["eth0.nmconnection"], KEYFILE);
    let yaml = report["installer_configs"]["/etc/coreos/installer.d/0000-customize.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(
        yaml,
        "ignition-file: /etc/coreos/dest.ign\nconsole:\n- ttyS0,115200n8\nappend-karg:\n- nosmt\n- mitigations=auto\ncopy-network: true\ndest-device: /dev/vda\n"
    );
    let dest: serde_json::Value =
        serde_json::from_str(report["dest_ignition"].as_str().unwrap()).unwrap();
    assert!(dest["ignition"]["security"]["tls"]["certificateAuthorities"][0]["source"].is_string());
    // layerboot refuses to customize it again without --force, and its reset is pristine
    let out = layerboot(&["iso", "customize", "--live-karg-append", "x", s(&iso)]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("already customized")
    );
    layerboot_ok(&["iso", "reset", s(&iso)]);
    assert!(
        contents(&iso) == contents(&fixture()),
        "file contents differ"
    );

    // iso ignition embed: the raw bytes come back verbatim
    let iso = copy_fixture(dir.path(), "embed.iso");
    coreos_ok(&["iso", "ignition", "embed", "-i", s(&i.dest_ign), s(&iso)]);
    let report = show_json(&iso);
    assert_eq!(report["ignition"].as_str().unwrap(), DEST_IGN);
    assert_eq!(report["customized"], true);

    // iso kargs modify
    let iso = copy_fixture(dir.path(), "kargs.iso");
    coreos_ok(&[
        "iso",
        "kargs",
        "modify",
        "-a",
        "foo=bar",
        "-d",
        "quiet",
        s(&iso),
    ]);
    let report = show_json(&iso);
    assert_eq!(
        report["kargs"]["current"],
        liveiso::DEFAULT_KARGS.replace(" quiet", "") + " foo=bar"
    );
    assert_eq!(report["kargs"]["default"], liveiso::DEFAULT_KARGS);
    assert_eq!(report["ignition"], serde_json::Value::Null);
}
