//! The SELinux + bootupd fixture's disk booted with the image's policy loaded
//! (`security=selinux selinux=1 enforcing=0`): nothing the build wrote (`/boot`, the
//! physical root minus ostree's objects and the deployments' trees, the deployment's
//! `/etc`, the stateroot's `/var`) is `unlabeled_t`, no AVC denial is about those files,
//! and the real `bootupctl status` (bootupd from crates.io, in the image) reads the state
//! layerboot wrote and reports the installed components; layerboot's own `bootupctl
//! backend install` step, run in the guest with the image's bootupctl, records that same
//! state and fills an ESP like the disk's.

use layerboot::boottest::{Artifact, Firmware, Outcome};
use layerboot_testkit::selinux_image::selinux_image;

use crate::common::{full_os_boot_lock, Scratch};
use crate::disk::{
    build_disk_from, reported, run_boot, settings, slow_machine_args, urlencode, work_dir,
    SLOW_MACHINE_DROPIN,
};

/// Every line the guest reported with `prefix`, in order (ports first, then console).
fn all_reported(o: &Outcome, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = o
        .port_lines
        .iter()
        .filter_map(|l| {
            l.find(prefix)
                .map(|i| l[i + prefix.len()..].trim().to_string())
        })
        .collect();
    if v.is_empty() {
        v = o
            .console
            .lines()
            .filter_map(|l| {
                l.find(prefix)
                    .map(|i| l[i + prefix.len()..].trim().to_string())
            })
            .collect();
    }
    v
}

#[test]
fn selinux_disk_has_no_unlabeled_build_files_and_bootupctl_reads_its_state() {
    let _serial = full_os_boot_lock();
    let img = selinux_image().expect("SELinux fixture (needs root, network to the Debian mirror, semodule, bootupd from .ci/install-deps)");
    let mut args = slow_machine_args();
    // Room for ostree-ext's labelled copy of the unlabelled base (see tests/disk_selinux.rs).
    args.extend([
        "--size",
        "4GiB",
        "--karg",
        "security=selinux",
        "--karg",
        "selinux=1",
        "--karg",
        "enforcing=0",
    ]);
    let disk = build_disk_from(&img.oci_ref(), "qemu-plain", "selinux-qemu.img", &args);
    let _scratch = Scratch(vec![disk.clone()]);
    let ign = work_dir().join("selinux-first-boot.ign");
    let config = serde_json::json!({
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [
            {"path": "/etc/systemd/system.conf.d/50-slow-tcg-host.conf", "mode": 420, "overwrite": true, "contents": {"source": format!("data:,{}", urlencode(SLOW_MACHINE_DROPIN))}}
        ]}
    });
    std::fs::write(&ign, config.to_string()).unwrap();
    let s = settings(
        Artifact::Qcow2(disk),
        Firmware::Uefi,
        512,
        &[
            format!("LAYERED-OK {}", img.marker),
            "SELINUX-ENFORCE".into(),
            "SELINUX-CHECK".into(),
            "BOOTUPD-STATUS-RC".into(),
            "SELINUX-DONE".into(),
        ],
        Some(&ign),
        "disk-selinux-uefi",
    );
    let o = run_boot(&s);
    let console = |p: &str| all_reported(&o, p).join("\n");

    assert_eq!(
        reported(&o, "SELINUX-ENFORCE "),
        "0",
        "the policy is loaded, permissive"
    );
    let labels = console("SELINUX-LABEL ");
    for (path, ty) in [
        ("/boot", ":boot_t:"),
        ("/sysroot", ":root_t:"),
        ("/boot/bootupd-state.json", ":boot_t:"),
    ] {
        let line = all_reported(&o, "SELINUX-LABEL ")
            .into_iter()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} not reported:\n{labels}"));
        assert!(line.contains(ty), "{line}\n{labels}");
    }
    let check = reported(&o, "SELINUX-CHECK ");
    let field = |k: &str| -> u64 {
        check
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {check}"))
    };
    eprintln!("SELINUX-CHECK {check}");
    assert!(
        field("files") > 200,
        "the walk saw the build's files: {check}"
    );
    assert_eq!(
        field("unlabeled"),
        0,
        "{check}\n{}",
        console("SELINUX-UNLABELED ")
    );
    let avcs = all_reported(&o, "SELINUX-AVC ");
    assert!(
        field("avc-ours") <= 20,
        "{check}\n{}",
        console("SELINUX-AVC ")
    );
    let defects = labelling_defects(&avcs);
    assert!(
        defects.is_empty(),
        "AVC denials about files the build wrote: {check}\n{}",
        defects.join("\n")
    );

    let status = console("BOOTUPD-STATUS ");
    eprintln!("bootupctl status:\n{status}");
    assert_eq!(reported(&o, "BOOTUPD-STATUS-RC "), "0", "{status}");
    for want in ["Component BIOS", "Component EFI", "Installed:"] {
        assert!(status.contains(want), "{want} in:\n{status}");
    }
    assert!(
        !status.contains("Adoptable:"),
        "installed, not adoptable:\n{status}"
    );
    assert_eq!(reported(&o, "BOOTUPD-JSON-RC "), "0");
    let json: serde_json::Value =
        serde_json::from_str(&reported(&o, "BOOTUPD-JSON ")).expect("bootupctl status --json");
    let comps = json["components"].as_object().expect("components");
    assert!(
        comps.contains_key("EFI") && comps.contains_key("BIOS"),
        "{json}"
    );
    assert!(
        comps["EFI"]["installed"]["version"]
            .as_str()
            .unwrap()
            .contains("shim-signed="),
        "{json}"
    );
    assert_eq!(json["boot-method"], "EFI", "{json}");

    // layerboot's `bootupctl backend install` step (the script the build runs in the deploy
    // helper's namespace) with the image's real bootupctl, run here where the kernel mounts
    // vfat (the build host's cannot, so the build used layerboot's installer): bootupd's
    // own state is the one the build wrote, but for the BIOS component (bootupctl installs
    // it only onto a device), and its ESP is the disk's, but for layerboot's bootuuid.cfg
    // (bootupctl writes it only with --write-uuid, from a mounted boot filesystem).
    let log = console("BOOTUPCTL-LOG ");
    eprintln!("bootupctl backend install:\n{log}");
    assert_eq!(reported(&o, "BOOTUPCTL-RC "), "0", "{log}");
    let theirs: serde_json::Value = serde_json::from_str(&reported(&o, "BOOTUPCTL-STATE "))
        .unwrap_or_else(|e| panic!("bootupctl's state: {e}\n{log}"));
    let mut ours: serde_json::Value =
        serde_json::from_str(&reported(&o, "LAYERBOOT-STATE ")).expect("the build's state");
    let installed = ours["installed"].as_object_mut().expect("installed");
    assert!(installed.remove("BIOS").is_some(), "{theirs}");
    assert!(theirs["installed"]["EFI"]["filetree"]["children"]
        .as_object()
        .is_some_and(|c| c.len() == 6));
    assert_eq!(theirs, ours);
    assert_eq!(reported(&o, "BOOTUPCTL-GRUBENV "), "same");
    assert_eq!(
        all_reported(&o, "BOOTUPCTL-ESP-DIFF "),
        ["Only in real-esp/EFI/debian: bootuuid.cfg"]
    );
    assert_eq!(reported(&o, "BOOTUPCTL-ESP-DIFF-RC "), "1");
}

/// The AVC denials (audit lines) about the build's files that point at a labelling
/// defect. A relabel to the label the file already carries is not one: Debian's policy
/// lets systemd-tmpfiles' `L+ /etc/mtab` recreate the link but not relabel an `etc_t`
/// link to `etc_t`, so every Debian system with SELinux logs that pair, labelled by
/// layerboot or by `restorecon` alike.
fn labelling_defects(avcs: &[String]) -> Vec<String> {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let perm = |line: &str| -> Option<String> {
        let (_, rest) = line.split_once("{ ")?;
        Some(rest.split_once(" }")?.0.to_string())
    };
    let mut by_inode: std::collections::BTreeMap<String, Vec<&String>> = Default::default();
    for l in avcs {
        by_inode
            .entry(field(l, "ino=").unwrap_or_default())
            .or_default()
            .push(l);
    }
    let mut defects = Vec::new();
    for (ino, lines) in by_inode {
        let no_op_relabel = lines
            .iter()
            .all(|l| matches!(perm(l).as_deref(), Some("relabelfrom" | "relabelto")))
            && lines
                .iter()
                .map(|l| field(l, "tcontext="))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1
            && !ino.is_empty();
        if no_op_relabel {
            eprintln!(
                "not a labelling defect (relabel to the same label): {}",
                lines[0]
            );
        } else {
            defects.extend(lines.into_iter().cloned());
        }
    }
    defects
}

#[test]
fn relabel_to_the_same_label_is_not_a_labelling_defect() {
    let line = |perm: &str, ino: u32, t: &str| {
        format!("audit: type=1400 audit(1.1:30): avc:  denied  {{ {perm} }} for  pid=535 comm=\"systemd-tmpfile\" name=\"mtab\" dev=\"vda4\" ino={ino} scontext=system_u:system_r:systemd_tmpfiles_t:s0 tcontext=system_u:object_r:{t}:s0 tclass=lnk_file permissive=1")
    };
    let cases: Vec<(&str, Vec<String>, usize)> = vec![
        (
            "mtab pair",
            vec![
                line("relabelfrom", 7, "etc_t"),
                line("relabelto", 7, "etc_t"),
            ],
            0,
        ),
        (
            "relabel from unlabeled_t",
            vec![
                line("relabelfrom", 7, "unlabeled_t"),
                line("relabelto", 7, "etc_t"),
            ],
            2,
        ),
        ("read denied", vec![line("read", 8, "etc_t")], 1),
    ];
    for (name, avcs, want) in cases {
        assert_eq!(labelling_defects(&avcs).len(), want, "{name}");
    }
}
