//! The rebase config's unit and script, checked by real tools: `systemd-analyze verify`
//! on the unit, `dash -n` on the script, and the exactly-once guard run by the real shell
//! over several simulated boots. rpm-ostree and systemctl cannot run here, so they are
//! replaced by recorders on PATH (the switch itself is not exercised, only our logic
//! around it); /var/lib is a private tmpfs (unshare --mount) so the real stamp path is used
//! without touching the host.

mod install_support;
use install_support::*;

use std::path::Path;
use std::process::Command;

use layerboot::ignition::decode_data_url;

struct Rendered {
    unit: String,
    script: Vec<u8>,
    target: String,
}

fn render(dir: &Path) -> Rendered {
    let out_file = dir.join("rebase.ign");
    // No registry credentials: this test is about the unit and the script.
    let empty = dir.join("empty-auth.json");
    std::fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    let out = layerboot(&[
        "ignition",
        "rebase",
        IMAGE,
        "--offline",
        "--authfile",
        empty.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    let unit = v["systemd"]["units"][0]["contents"]
        .as_str()
        .unwrap()
        .to_string();
    let file = v["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/usr/local/bin/layerboot-rebase")
        .unwrap()
        .clone();
    let script = decode_data_url(file["contents"]["source"].as_str().unwrap()).unwrap();
    Rendered {
        unit,
        script,
        target: format!("ostree-unverified-registry:{IMAGE}"),
    }
}

#[test]
fn unit_and_script_pass_the_real_checkers() {
    assert!(
        layerboot::cmd::have("systemd-analyze"),
        "systemd-analyze not found: install the Debian package 'systemd'"
    );
    let dir = tempfile::tempdir().unwrap();
    let r = render(dir.path());
    let script = dir.path().join("layerboot-rebase");
    std::fs::write(&script, &r.script).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    // verify needs the ExecStart binary to exist: point it at our copy.
    let unit = r.unit.replace(
        "ExecStart=/usr/local/bin/layerboot-rebase",
        &format!("ExecStart={}", script.display()),
    );
    let unit_path = dir.path().join("layerboot-rebase.service");
    std::fs::write(&unit_path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("dash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Simulate boots: systemd's ConditionPathExists, then the script with recorders.
/// `booted` is what `rpm-ostree status --booted --json` reports, `rebase_ok` whether the
/// switch succeeds. Returns (script ran, exit ok, log of recorded commands).
fn boots(r: &Rendered, plan: &[(&str, bool)]) -> Vec<(bool, bool, String)> {
    let condition = r
        .unit
        .lines()
        .find_map(|l| l.strip_prefix("ConditionPathExists=!"))
        .expect("stamp condition")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("log");
    let script = dir.path().join("layerboot-rebase");
    std::fs::write(&script, &r.script).unwrap();
    std::fs::write(
        bin.join("rpm-ostree"),
        format!(
            "#!/bin/sh\ncase \"$1\" in\n status) printf '{{\"deployments\":[{{\"booted\":true,\"container-image-reference\":\"%s\"}}]}}\\n' \"$BOOTED\";;\n rebase) echo \"rebase $2\" >> {log}; [ \"$REBASE_OK\" = 1 ];;\nesac\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::write(
        bin.join("systemctl"),
        format!("#!/bin/sh\necho \"systemctl $*\" >> {}\n", log.display()),
    )
    .unwrap();
    Command::new("chmod")
        .args(["-R", "755"])
        .arg(&bin)
        .arg(&script)
        .status()
        .unwrap();

    // One private mount namespace for the whole sequence: /var/lib persists across the
    // simulated boots (as on a real node) and vanishes with the namespace.
    let mut sh = format!(
        "set -u\nmount -t tmpfs tmpfs /var/lib || exit 99\nexport PATH={}:$PATH\n",
        bin.display()
    );
    for (i, (booted, ok)) in plan.iter().enumerate() {
        sh.push_str(&format!(
            "echo \"== boot {i}\" >> {log}\nif [ -e {condition} ]; then echo \"skipped\" >> {log}; else BOOTED='{booted}' REBASE_OK={ok} {script} >/dev/null 2>&1; echo \"exit $?\" >> {log}; fi\n",
            log = log.display(),
            ok = u8::from(*ok),
            script = script.display(),
        ));
    }
    let out = Command::new("unshare")
        .args(["--mount", "--fork", "sh", "-c", &sh])
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "unshare --mount failed (needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    text.split("== boot ")
        .skip(1)
        .map(|b| {
            let ran = !b.contains("skipped");
            (
                ran,
                b.contains("exit 0"),
                b.lines().skip(1).collect::<Vec<_>>().join("\n"),
            )
        })
        .collect()
}

#[test]
fn reboots_exactly_once_and_never_loops() {
    let dir = tempfile::tempdir().unwrap();
    let r = render(dir.path());
    let stock = "ostree-unverified-registry:quay.io/fedora/fedora-coreos:stable";

    // Stock image: switch and reboot on the first boot, then the unit never runs again,
    // even if the node still reported the old deployment.
    let b = boots(
        &r,
        &[(stock, true), (r.target.as_str(), true), (stock, true)],
    );
    assert!(b[0].0 && b[0].1, "{b:?}");
    assert_eq!(b[0].2.matches("rebase ").count(), 1, "{b:?}");
    assert!(b[0].2.contains(&format!("rebase {}", r.target)), "{b:?}");
    assert_eq!(b[0].2.matches("systemctl reboot").count(), 1, "{b:?}");
    assert!(!b[1].0 && !b[2].0, "ran again after the reboot: {b:?}");

    // Already on the target (e.g. a disk built from the image): no switch, no reboot.
    let b = boots(&r, &[(r.target.as_str(), true), (r.target.as_str(), true)]);
    assert!(
        b[0].0 && b[0].1 && !b[0].2.contains("rebase ") && !b[0].2.contains("reboot"),
        "{b:?}"
    );
    assert!(!b[1].0, "{b:?}");

    // A failed switch: the unit fails, no reboot, no stamp; the next boot tries again.
    let b = boots(&r, &[(stock, false), (stock, true)]);
    assert!(b[0].0 && !b[0].1 && !b[0].2.contains("reboot"), "{b:?}");
    assert!(
        b[1].0 && b[1].1 && b[1].2.contains("systemctl reboot"),
        "{b:?}"
    );
}
