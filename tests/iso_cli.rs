//! `layerboot iso customize / show / reset` on the fixture live ISO: what is written
//! where, in place vs -o vs stdout, refusal to re-customize, reset, and bad input.

mod iso_support;

use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::{Pid, Signal};

use iso_support::*;

/// Byte offsets where two equally long files differ, as (start, end) runs.
fn diff_runs(a: &Path, b: &Path) -> Vec<(u64, u64)> {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a.len(), b.len(), "size changed");
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x != y {
            let i = i as u64;
            match runs.last_mut() {
                Some(r) if r.1 == i => r.1 = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
    }
    runs
}

#[test]
fn in_place_touches_only_the_embed_areas_and_matches_o_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let fixture = fixture();
    let pristine = show_json(&fixture);
    assert_eq!(pristine["customized"], false);
    assert_eq!(pristine["ignition_area"]["length"], 262144);
    assert_eq!(pristine["kargs"]["current"], liveiso::DEFAULT_KARGS);

    let opts = [
        "--dest-ignition",
        s(&i.dest_ign),
        "--dest-device",
        "/dev/sda",
        "--image-url",
        "https://images.example.com/layered-metal.x86_64.raw.xz",
        "--insecure",
        "--live-karg-append",
        "layerboot.marker=42",
    ];
    let in_place = copy_fixture(dir.path(), "inplace.iso");
    layerboot_ok(&[&["iso", "customize", s(&in_place)][..], &opts].concat());

    // every changed byte lies inside the Ignition area or a kargs area
    let area = |v: &serde_json::Value| {
        (
            v["offset"].as_u64().unwrap(),
            v["offset"].as_u64().unwrap() + v["length"].as_u64().unwrap_or(1024),
        )
    };
    let mut allowed = vec![area(&pristine["ignition_area"])];
    for a in pristine["kargs"]["areas"].as_array().unwrap() {
        allowed.push((
            a["offset"].as_u64().unwrap(),
            a["offset"].as_u64().unwrap() + pristine["kargs"]["area_size"].as_u64().unwrap(),
        ));
    }
    let runs = diff_runs(&fixture, &in_place);
    assert!(!runs.is_empty());
    for (start, end) in &runs {
        assert!(
            allowed.iter().any(|(a, b)| a <= start && end <= b),
            "bytes {start}..{end} changed outside the embed areas {allowed:?}"
        );
    }
    assert_eq!(
        runs.iter()
            .filter(|(s, _)| allowed[1..].iter().any(|(a, b)| a <= s && s < b))
            .count(),
        2,
        "both kargs areas changed"
    );

    // -o leaves the input alone and gives the same bytes; so does -o -
    let before = contents(&fixture);
    let out = dir.path().join("out.iso");
    layerboot_ok(&[&["iso", "customize", s(&fixture), "-o", s(&out)][..], &opts].concat());
    assert!(contents(&fixture) == before, "-o modified the input");
    assert!(
        contents(&out) == contents(&in_place),
        "file contents differ"
    );
    let streamed = dir.path().join("streamed.iso");
    let status = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args([&["iso", "customize", s(&fixture), "-o", "-"][..], &opts].concat())
        .stdout(Stdio::from(std::fs::File::create(&streamed).unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        contents(&streamed) == contents(&in_place),
        "file contents differ"
    );

    // show reports what was embedded
    let r = show_json(&in_place);
    assert_eq!(r["customized"], true);
    assert_eq!(
        r["kargs"]["current"],
        format!("{} layerboot.marker=42", liveiso::DEFAULT_KARGS)
    );
    assert_eq!(
        r["installer_configs"]["/etc/coreos/installer.d/0000-customize.yaml"],
        "image-url: https://images.example.com/layered-metal.x86_64.raw.xz\nignition-file: /etc/coreos/dest.ign\ninsecure: true\ndest-device: /dev/sda\n"
    );
    let dest: serde_json::Value =
        serde_json::from_str(r["dest_ignition"].as_str().unwrap()).unwrap();
    assert_eq!(
        dest,
        serde_json::from_str::<serde_json::Value>(
            &serde_json::to_string(&ignition_config::Config::parse_str(DEST_IGN).unwrap().0)
                .unwrap()
        )
        .unwrap()
    );
    let human = String::from_utf8(layerboot_ok(&["iso", "show", s(&in_place)])).unwrap();
    assert!(
        human.contains("Customized:      yes") && human.contains("dest-device: /dev/sda"),
        "{human}"
    );

    // re-customizing needs --force; forced, the new content replaces the old embedded
    // configs, and kernel arguments stay as they are unless edited (coreos-installer's rule)
    let out = layerboot(&[
        "iso",
        "customize",
        "--live-ignition",
        s(&i.live_ign),
        s(&in_place),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already customized"));
    let kargs_before = show_json(&in_place)["kargs"]["current"].clone();
    assert_ne!(kargs_before, liveiso::DEFAULT_KARGS);
    layerboot_ok(&[
        "iso",
        "customize",
        "--force",
        "--live-ignition",
        s(&i.live_ign),
        s(&in_place),
    ]);
    let r = show_json(&in_place);
    assert_eq!(r["kargs"]["current"], kargs_before);
    assert_eq!(r["installer_configs"], serde_json::json!({}));
    assert!(r["ignition"].as_str().unwrap().contains("\"merge\""));

    // reset gives back the pristine image, in place and with -o
    let reset_out = dir.path().join("reset.iso");
    layerboot_ok(&["iso", "reset", s(&in_place), "-o", s(&reset_out)]);
    assert!(contents(&reset_out) == before, "file contents differ");
    layerboot_ok(&["iso", "reset", s(&in_place)]);
    assert!(contents(&in_place) == before, "file contents differ");
}

/// Run a failing command and check: non-zero exit, one `error:` line naming `want`,
/// input bytes unchanged, no output file and no temporary file left beside it.
fn assert_refused(args: &[&str], input: &Path, out_dir: &Path, want: &str) {
    let before = contents(input);
    let entries_before = std::fs::read_dir(out_dir).unwrap().count();
    let out = layerboot(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one error line, got {stderr:?}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains(want),
        "{stderr:?} should name {want:?}"
    );
    assert!(contents(input) == before, "{args:?} modified its input");
    assert_eq!(
        std::fs::read_dir(out_dir).unwrap().count(),
        entries_before,
        "{args:?} left files behind"
    );
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let o = outdir.join("o.iso");
    let good = copy_fixture(dir.path(), "good.iso");

    let not_iso = dir.path().join("not.iso");
    std::fs::write(&not_iso, vec![0x5a; 1 << 20]).unwrap();
    let truncated = dir.path().join("trunc.iso");
    let data = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    // a real ISO 9660 image without CoreOS embed areas
    let plain_tree = dir.path().join("plain");
    std::fs::create_dir_all(plain_tree.join("docs")).unwrap();
    std::fs::write(plain_tree.join("docs/readme.txt"), "not CoreOS").unwrap();
    let plain = dir.path().join("plain.iso");
    let st = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-r",
            "-o",
            s(&plain),
            s(&plain_tree),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let bad_ign = dir.path().join("bad.ign");
    std::fs::write(
        &bad_ign,
        r#"{"ignition":{"version":"3.2.0"},"storage":{"files":"nope"}}"#,
    )
    .unwrap();
    let v2_ign = dir.path().join("v2.ign");
    std::fs::write(&v2_ign, r#"{"ignition":{"version":"2.2.0"}}"#).unwrap();
    // ~400 KiB of incompressible text: larger than the 256 KiB area even after xz
    let mut x = 0x2545F4914F6CDD1Du64;
    let noise: String = (0..400_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    [(x % 62) as usize],
            )
        })
        .collect();
    let big_ign = dir.path().join("big.ign");
    std::fs::write(&big_ign, format!(r#"{{"ignition":{{"version":"3.3.0"}},"storage":{{"files":[{{"path":"/big","contents":{{"source":"data:,{noise}"}}}}]}}}}"#)).unwrap();
    let long_karg = "x".repeat(1100);

    let cases: Vec<(Vec<&str>, &Path, &str)> = vec![
        (
            vec![
                "iso",
                "customize",
                s(&not_iso),
                "-o",
                s(&o),
                "--live-karg-append",
                "a",
            ],
            &not_iso,
            "not an ISO 9660 image",
        ),
        (
            vec!["iso", "show", s(&not_iso)],
            &not_iso,
            "not an ISO 9660 image",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&truncated),
                "-o",
                s(&o),
                "--live-karg-append",
                "a",
            ],
            &truncated,
            "truncated",
        ),
        (
            vec!["iso", "customize", s(&truncated), "--live-karg-append", "a"],
            &truncated,
            "truncated",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&plain),
                "-o",
                s(&o),
                "--live-karg-append",
                "a",
            ],
            &plain,
            "not a CoreOS live ISO",
        ),
        (
            vec!["iso", "reset", s(&plain)],
            &plain,
            "not a CoreOS live ISO",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&good),
                "-o",
                s(&o),
                "--dest-ignition",
                s(&bad_ign),
            ],
            &good,
            "invalid Ignition config",
        ),
        (
            vec!["iso", "customize", s(&good), "--live-ignition", s(&bad_ign)],
            &good,
            "bad.ign",
        ),
        (
            vec!["iso", "customize", s(&good), "--live-ignition", s(&v2_ign)],
            &good,
            "unsupported config version: 2.2.0",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&good),
                "--live-karg-append",
                &long_karg,
            ],
            &good,
            "kernel arguments need 1217 bytes but the ISO's kargs area holds 1024",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&good),
                "-o",
                s(&o),
                "--live-ignition",
                s(&big_ign),
            ],
            &good,
            "holds 262144",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&good),
                "--ignition-ca",
                s(&i.live_ign),
            ],
            &good,
            "live.ign: no PEM certificate found",
        ),
        (
            vec![
                "iso",
                "customize",
                s(&good),
                "--dest-ignition",
                "/nonexistent.ign",
            ],
            &good,
            "/nonexistent.ign",
        ),
    ];
    for (args, input, want) in &cases {
        assert_refused(args, input, &outdir, want);
    }
    // the payload error states both sizes and what to do instead
    let out = layerboot(&["iso", "customize", s(&good), "--live-ignition", s(&big_ign)]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("the payload to embed is ") && msg.contains("bytes (xz-compressed) but the ISO's Ignition area (images/ignition.img) holds 262144") && msg.contains("pointer"), "{msg}");
}

#[test]
fn pointer_pool_embeds_the_pools_pointer_config_as_destination() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let iso = copy_fixture(dir.path(), "pointer.iso");
    let endpoint = [
        "--cluster",
        "ocp",
        "--base-domain",
        "example.com",
        "--ca",
        s(&i.ca),
    ];
    layerboot_ok(
        &[
            &[
                "iso",
                "customize",
                s(&iso),
                "--pointer-pool",
                "worker-automount",
                "--dest-device",
                "/dev/sda",
            ][..],
            &endpoint,
        ]
        .concat(),
    );
    let pointer = layerboot_ok(
        &[
            &["ignition", "pointer", "--pool", "worker-automount"][..],
            &endpoint,
        ]
        .concat(),
    );
    let r = show_json(&iso);
    // embedded re-serialized through ignition-config, as coreos-installer embeds a single
    // destination config: equal as typed configs
    let embedded_text = r["dest_ignition"].as_str().unwrap();
    assert_eq!(
        ignition_config::Config::parse_str(embedded_text).unwrap().0,
        ignition_config::Config::parse_slice(&pointer).unwrap().0
    );
    let embedded: serde_json::Value = serde_json::from_str(embedded_text).unwrap();
    assert_eq!(
        embedded["ignition"]["config"]["merge"][0]["source"],
        "https://api-int.ocp.example.com:22623/config/worker-automount"
    );
    assert_eq!(
        r["installer_configs"]["/etc/coreos/installer.d/0000-customize.yaml"],
        "ignition-file: /etc/coreos/dest.ign\ndest-device: /dev/sda\n"
    );

    // an invalid pool name is refused before anything is written
    let before = contents(&iso);
    let out = layerboot(
        &[
            &[
                "iso",
                "customize",
                "--force",
                s(&iso),
                "--pointer-pool",
                "Bad_Pool",
            ][..],
            &endpoint,
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bad_Pool"));
    assert!(contents(&iso) == before, "file contents differ");
}

/// Issue #15 item 7: SIGINT, SIGTERM and SIGHUP alike stop the copy, leave nothing, and
/// exit with 128 + the signal's number.
#[test]
fn signals_during_o_leave_no_output() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let iso = copy_fixture(dir.path(), "big.iso");
    // a 2 GiB file (sparse tail after the volume) so the copy takes a while
    std::fs::OpenOptions::new()
        .write(true)
        .open(&iso)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    for (signal, name, code) in [
        (Signal::INT, "SIGINT", 130),
        (Signal::TERM, "SIGTERM", 143),
        (Signal::HUP, "SIGHUP", 129),
    ] {
        let child = Command::new(env!("CARGO_BIN_EXE_layerboot"))
            .args([
                "iso",
                "customize",
                s(&iso),
                "-o",
                s(&outdir.join("o.iso")),
                "--live-karg-append",
                "a",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            (out.status.code(), out.status.signal()),
            (Some(code), None),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("interrupted by {name}")),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert_eq!(
            std::fs::read_dir(&outdir).unwrap().count(),
            0,
            "the interrupted -o left files behind ({name})"
        );
    }
}

/// A minimal CoreOS-shaped ISO (Ignition area, one kargs area) with the given kargs.json.
fn iso_with_kargs_json(dir: &Path, kargs_json: &str) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("images")).unwrap();
    std::fs::create_dir_all(tree.join("coreos")).unwrap();
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::write(tree.join("images/ignition.img"), vec![0u8; 256 << 10]).unwrap();
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        format!("append {}\n", "#".repeat(1024)),
    )
    .unwrap();
    std::fs::write(tree.join("coreos/kargs.json"), kargs_json).unwrap();
    let iso = dir.join("small.iso");
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-o", s(&iso), s(&tree)])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&tree).unwrap();
    iso
}

/// Issue #15 item 5: a kargs.json offset near 2^64 wrapped the bounds check (release
/// builds) and `iso customize` wrote outside the area.
#[test]
fn kargs_offsets_that_would_wrap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let iso = iso_with_kargs_json(
        dir.path(),
        r#"{"default":"","files":[{"path":"isolinux/isolinux.cfg","offset":18446744073709551104}],"size":1024}"#,
    );
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let o = outdir.join("o.iso");
    for args in [
        vec![
            "iso",
            "customize",
            s(&iso),
            "-o",
            s(&o),
            "--live-karg-append",
            "a",
        ],
        vec![
            "iso",
            "customize",
            "--force",
            s(&iso),
            "--live-karg-append",
            "a",
        ],
        vec!["iso", "show", s(&iso)],
    ] {
        assert_refused(
            &args,
            &iso,
            &outdir,
            "kargs area 18446744073709551104+1024 exceeds isolinux/isolinux.cfg",
        );
    }
}

/// Run layerboot under `umask`; returns (success, stdout, stderr).
fn layerboot_umask(umask: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_layerboot"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Issue #15 item 3: `iso show` printed embedded registry credentials, and outputs came
/// out 0644 whatever the umask; now secrets are redacted unless --show-secrets, an ISO
/// embedding them is 0600, and ordinary outputs honour the umask.
#[test]
fn secrets_are_redacted_and_outputs_holding_them_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "c2VjcmV0LWNyZWRlbnRpYWw";
    let dest = dir.path().join("rebase.ign");
    std::fs::write(
        &dest,
        format!(
            r#"{{"ignition":{{"version":"3.2.0"}},"storage":{{"files":[{{"path":"/etc/ostree/auth.json","mode":384,"contents":{{"source":"data:,%7B%22auths%22%3A%7B%22quay.io%22%3A%7B%22auth%22%3A%22{secret}%22%7D%7D%7D"}}}}]}}}}"#
        ),
    )
    .unwrap();
    let keyfile = dir.path().join("wifi.nmconnection");
    std::fs::write(
        &keyfile,
        "[connection]\nid=wifi\ntype=wifi\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter2-wifi\n",
    )
    .unwrap();
    let fixture = fixture();
    let with_secrets = dir.path().join("secret.iso");
    let (ok, _, err) = layerboot_umask(
        "022",
        &[
            "iso",
            "customize",
            s(&fixture),
            "-o",
            s(&with_secrets),
            "--dest-ignition",
            s(&dest),
            "--network-keyfile",
            s(&keyfile),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(mode(&with_secrets), 0o600, "an ISO holding credentials");

    for json in [false, true] {
        let mut args = vec!["iso", "show", s(&with_secrets)];
        if json {
            args.push("--json");
        }
        let (ok, out, err) = layerboot_umask("022", &args);
        assert!(ok, "{err}");
        assert!(
            !out.contains(secret) && !out.contains("hunter2-wifi"),
            "secret shown: {out}"
        );
        assert!(out.contains("/etc/ostree/auth.json"), "{out}");
        assert!(
            err.contains("secrets redacted") && err.contains("--show-secrets"),
            "{err}"
        );
        args.push("--show-secrets");
        let (ok, out, _) = layerboot_umask("022", &args);
        assert!(ok);
        assert!(
            out.contains(secret) && out.contains("hunter2-wifi"),
            "{out}"
        );
    }

    // ordinary outputs: the umask decides
    for (umask, want) in [("022", 0o644), ("077", 0o600)] {
        let o = dir.path().join(format!("plain-{umask}.iso"));
        let (ok, _, err) = layerboot_umask(
            umask,
            &[
                "iso",
                "customize",
                s(&fixture),
                "-o",
                s(&o),
                "--live-karg-append",
                "a=1",
            ],
        );
        assert!(ok, "{err}");
        assert_eq!(mode(&o), want, "umask {umask}");
    }
}

/// Issue #15 item 8: `-o existing.iso` was overwritten silently, `-o LINK` replaced the
/// link, and `ignition pointer --ca ca.pem -o ca.pem` overwrote its own input.
#[test]
fn outputs_do_not_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs(dir.path());
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let existing = outdir.join("existing.iso");
    std::fs::write(&existing, "keep me").unwrap();
    let fixture = fixture();
    let fixture_s = s(&fixture).to_string();
    let customize = |extra: &[&'static str]| -> Vec<String> {
        ["iso", "customize", &fixture_s, "--live-karg-append", "a=1"]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let existing_s: &'static str = Box::leak(s(&existing).to_string().into_boxed_str());
    let args = customize(&["-o", existing_s]);
    assert_refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &existing,
        &outdir,
        "already exists; pass --force",
    );
    assert_refused(
        &["iso", "reset", s(&fixture), "-o", s(&existing)],
        &existing,
        &outdir,
        "already exists; pass --force",
    );
    let input_copy = copy_fixture(&outdir, "in.iso");
    assert_refused(
        &[
            "iso",
            "customize",
            s(&input_copy),
            "--live-karg-append",
            "a",
            "--force",
            "-o",
            s(&input_copy),
        ],
        &input_copy,
        &outdir,
        "is the input",
    );
    assert_refused(
        &[
            "ignition",
            "pointer",
            "--pool",
            "worker",
            "--api-vip",
            "192.0.2.5",
            "--ca",
            s(&i.ca),
            "-o",
            s(&i.ca),
        ],
        &i.ca,
        &outdir,
        "is the input",
    );
    // --force replaces; through a symlink, the target is replaced and the link stays
    let link = outdir.join("link.iso");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let link_s: &'static str = Box::leak(s(&link).to_string().into_boxed_str());
    let args = customize(&["--force", "-o", link_s]);
    layerboot_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::metadata(&existing).unwrap().len(),
        std::fs::metadata(&fixture).unwrap().len()
    );
}

/// Issue #15 item 9: `iso show FIFO` blocked forever in open(2).
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("live.iso");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = layerboot(&["iso", "show", s(&fifo)]);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file or block device"), "{err}");
}

/// `iso customize --json` (issue #16 item 4): the writes it reports are where the ISO
/// changed, at the offsets `iso show` gives its embed areas; `-q` silences the summary;
/// `--json` with `-o -` is refused, as the two would share stdout.
#[test]
fn customize_json_reports_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(dir.path(), "in.iso");
    let out = dir.path().join("out.iso");
    let o = layerboot(&[
        "-q",
        "iso",
        "customize",
        s(&input),
        "-o",
        s(&out),
        "--json",
        "--live-karg-append",
        "layerboot.json=1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "",
        "-q: no summary line"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["output"], s(&out));
    assert_eq!(v["inPlace"], false);
    assert_eq!(v["secret"], false);
    let writes = v["writes"].as_array().unwrap();
    assert!(!writes.is_empty(), "{v}");
    let shown = show_json(&out);
    let kargs_offsets: Vec<u64> = shown["kargs"]["areas"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["offset"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(kargs_offsets.len(), 2, "{shown}");
    assert!(
        kargs_offsets
            .iter()
            .all(|k| writes.iter().any(|w| w["offset"].as_u64() == Some(*k))),
        "both kargs areas are among the writes: {v}"
    );
    let (a, b) = (contents(&input), contents(&out));
    for w in writes {
        let (off, len) = (w["offset"].as_u64().unwrap(), w["length"].as_u64().unwrap());
        assert!(w["what"].as_str().is_some_and(|x| !x.is_empty()), "{w}");
        assert!(off + len <= b.len() as u64, "{w}");
        if kargs_offsets.contains(&off) {
            assert_ne!(
                a[off as usize..(off + len) as usize],
                b[off as usize..(off + len) as usize],
                "{w}: a kargs area written but unchanged"
            );
        }
    }
    // outside the reported writes, not one byte changed
    let mut covered = vec![false; b.len()];
    for w in writes {
        let (off, len) = (w["offset"].as_u64().unwrap(), w["length"].as_u64().unwrap());
        covered[off as usize..(off + len) as usize].fill(true);
    }
    assert!(
        a.iter()
            .zip(&b)
            .zip(&covered)
            .all(|((x, y), c)| *c || x == y),
        "bytes changed outside the reported writes"
    );
    let refused = layerboot(&["iso", "customize", s(&input), "-o", "-", "--json"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--json prints to stdout"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(refused.stdout.is_empty());
}
