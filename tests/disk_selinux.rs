//! SELinux labels and bootupd state of a built disk, read back from its filesystems
//! (no QEMU): the SELinux + bootupd fixture (`layerboot_testkit::selinux_image`) built
//! as a raw qemu disk, its ext4 `/boot` read with debugfs, its XFS root loop-mounted
//! read-only. Needs root, like `layerboot disk`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerboot_testkit::bootupd_image::VENDOR;
use layerboot_testkit::selinux_image::{selinux_image, SelinuxImage};

fn image() -> SelinuxImage {
    selinux_image().expect("SELinux fixture (needs root, network to the Debian mirror, semodule on the host, bootupd from .ci/install-deps)")
}

/// The qemu definition as an uncompressed raw disk, in `dir/defs`.
fn raw_definition(dir: &Path) -> PathBuf {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let qemu =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages/qemu.toml"))
            .unwrap();
    let raw_def: String = qemu
        .lines()
        .filter(|l| !l.starts_with("compression-level"))
        .map(|l| match l {
            l if l.starts_with("compression =") => "compression = \"none\"\n".to_string(),
            l if l.starts_with("format =") => "format = \"raw\"\n".to_string(),
            l => format!("{l}\n"),
        })
        .collect();
    std::fs::write(defs.join("qemu-raw.toml"), raw_def).unwrap();
    defs
}

fn extract(raw: &Path, offset: u64, len: u64, to: &Path) -> PathBuf {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::copy(&mut f.take(len), &mut std::fs::File::create(to).unwrap()).unwrap();
    to.to_path_buf()
}

fn debugfs(img: &Path, request: &str) -> String {
    let o = Command::new("debugfs")
        .args(["-R", request])
        .arg(img)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every path in the ext4 image (debugfs `ls -p`, recursively), `/`-rooted.
fn ext4_paths(img: &Path, dir: &str, out: &mut Vec<(String, bool)>) {
    for line in debugfs(img, &format!("ls -p {dir}")).lines() {
        // /ino/mode/uid/gid/name/size/
        let f: Vec<&str> = line.split('/').collect();
        if f.len() < 7 || f[5] == "." || f[5] == ".." || f[5].is_empty() {
            continue;
        }
        let is_dir = u32::from_str_radix(f[2], 8).is_ok_and(|m| m & 0o170000 == 0o040000);
        let path = format!("{}/{}", dir.trim_end_matches('/'), f[5]);
        out.push((path.clone(), is_dir));
        if is_dir {
            ext4_paths(img, &path, out);
        }
    }
}

fn ext4_label(img: &Path, path: &str) -> Option<String> {
    let out = debugfs(img, &format!("ea_get {path} security.selinux"));
    let v = out.trim().strip_prefix("security.selinux (")?;
    let v = v.split_once("= \"")?.1;
    Some(
        v.trim_end_matches('"')
            .trim_end_matches("\\000")
            .to_string(),
    )
}

fn xattr_label(p: &Path) -> Option<String> {
    let mut buf = vec![0u8; 512];
    let n = rustix::fs::lgetxattr(p, "security.selinux", &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(
        String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_string(),
    )
}

/// A read-only loop mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(img: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-o", "ro,loop"])
            .arg(img)
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting {}", img.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Files below `root`, minus `skip` subtrees.
fn walk(root: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if skip.contains(&p) {
            continue;
        }
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&p, skip, out);
        }
    }
}

fn is_policy_label(l: &Option<String>) -> bool {
    matches!(l, Some(l) if l.starts_with("system_u:object_r:") && !l.contains("unlabeled_t"))
}

#[test]
fn disk_is_labelled_from_the_images_policy_and_carries_bootupd_state() {
    let img = image();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = raw_definition(dir.path());
    let raw = dir.path().join("selinux.raw");
    let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["disk", &img.oci_ref(), "--bootimages"])
        .arg(&defs)
        // The policy arrives in a derived layer over an unlabelled base commit: ostree-ext
        // writes the merged commit labelled, a second copy of the base's objects, which the
        // estimate from the layers does not foresee.
        .args(["-p", "qemu-raw", "--size", "4GiB", "--json", "-v", "-o"])
        .arg(&raw)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // The image's own bootupctl installs the EFI component and records the state where
    // the build host's kernel mounts vfat, which bootupctl requires of the ESP; elsewhere
    // (this project's CI host) layerboot's installer does, and says why.
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let host_vfat = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("vfat"));
    if host_vfat {
        assert_eq!(
            report["bootupctl"],
            img.bootupd_version.as_str(),
            "{report}"
        );
    } else {
        assert!(report.get("bootupctl").is_none(), "{report}");
        assert!(
            stderr.contains("which the build host's kernel cannot mount"),
            "{stderr}"
        );
    }

    let gpt = gpt::GptConfig::new().open(&raw).unwrap();
    let parts: Vec<_> = gpt.partitions().values().cloned().collect();
    let part = |i: usize, name: &str| {
        extract(
            &raw,
            parts[i].first_lba * 512,
            (parts[i].last_lba + 1 - parts[i].first_lba) * 512,
            &dir.path().join(name),
        )
    };

    // /boot: every file and directory, lost+found included, from the policy.
    let boot = part(2, "boot.img");
    let mut boot_paths = vec![("/".to_string(), true)];
    ext4_paths(&boot, "/", &mut boot_paths);
    assert!(boot_paths.len() > 10, "{boot_paths:?}");
    let mut unlabelled = vec![];
    for (p, _) in &boot_paths {
        let l = ext4_label(&boot, p);
        if !is_policy_label(&l) {
            unlabelled.push(format!("{p}: {l:?}"));
        }
    }
    assert!(unlabelled.is_empty(), "/boot: {unlabelled:#?}");
    assert!(ext4_label(&boot, "/").unwrap().contains(":boot_t:"));
    let entries: Vec<&String> = boot_paths
        .iter()
        .map(|(p, _)| p)
        // `/loader` is ostree's symlink to `loader.0` or `loader.1`, which holds the entries.
        .filter(|p| p.starts_with("/loader.") && p.contains("/entries/") && p.ends_with(".conf"))
        .collect();
    assert!(!entries.is_empty(), "BLS entries");
    for p in entries {
        assert!(ext4_label(&boot, p).unwrap().contains(":boot_t:"), "{p}");
    }
    let names: Vec<&str> = boot_paths.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "/lost+found",
        "/efi",
        "/bootupd-state.json",
        "/grub2/grub.cfg",
        "/ignition.firstboot",
    ] {
        assert!(names.contains(&want), "{want} in /boot: {names:?}");
    }

    // bootupd's state: compact JSON as bootupd writes it, the EFI files as on the ESP.
    let state_text = debugfs(&boot, "cat /bootupd-state.json");
    assert!(
        state_text.starts_with("{\"installed\":{\"BIOS\":") && !state_text.contains('\n'),
        "{state_text}"
    );
    let state: serde_json::Value = serde_json::from_str(&state_text).unwrap();
    assert_eq!(
        state
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["installed", "pending", "static-configs"]
    );
    assert_eq!(state["pending"], serde_json::Value::Null);
    assert_eq!(
        state["static-configs"]["version"],
        img.bootupd_version.as_str()
    );
    assert!(state["installed"]["BIOS"]["meta"]["version"]
        .as_str()
        .unwrap()
        .starts_with("grub-pc-bin="));
    assert_eq!(
        state["installed"]["BIOS"]["filetree"],
        serde_json::Value::Null
    );
    let efi = &state["installed"]["EFI"];
    assert!(efi["meta"]["version"]
        .as_str()
        .unwrap()
        .contains("shim-signed="));
    let esp = part(1, "esp.img");
    let fat = fatfs::FileSystem::new(std::fs::File::open(&esp).unwrap(), fatfs::FsOptions::new())
        .unwrap();
    let tree = efi["filetree"]["children"].as_object().unwrap();
    let mut keys: Vec<&str> = tree.keys().map(String::as_str).collect();
    keys.sort();
    let mut want: Vec<String> = ["BOOT/BOOTX64.EFI", "BOOT/fbx64.efi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.extend(
        ["BOOTX64.CSV", "grubx64.efi", "mmx64.efi", "shimx64.efi"]
            .iter()
            .map(|f| format!("{VENDOR}/{f}")),
    );
    assert_eq!(
        keys, want,
        "the EFI component's files, below the ESP's EFI/"
    );
    for (k, meta) in tree {
        let mut bytes = Vec::new();
        fat.root_dir()
            .open_file(&format!("EFI/{k}"))
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        use sha2::Digest;
        assert_eq!(meta["source"], k.as_str());
        assert_eq!(meta["size"], bytes.len() as u64, "{k}");
        assert_eq!(
            meta["sha512"],
            format!("sha512:{}", hex::encode(sha2::Sha512::digest(&bytes))),
            "{k}"
        );
    }

    // The root: the physical root's own files and directories, the deployment's /etc and
    // the stateroot's /var labelled; ostree's objects and the deployment's tree untouched.
    let root_img = part(3, "root.img");
    let m = dir.path().join("root-mnt");
    let _mount = Mount::new(&root_img, &m);
    let deploy_dir = m.join("ostree/deploy/default/deploy");
    let deployment = std::fs::read_dir(&deploy_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a deployment");
    let mut files = vec![m.clone()];
    walk(
        &m,
        &[m.join("ostree/repo/objects"), deployment.clone()],
        &mut files,
    );
    walk(&deployment.join("etc"), &[], &mut files);
    assert!(files.len() > 50, "{}", files.len());
    let bad: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let l = xattr_label(p);
            (!is_policy_label(&l)).then(|| format!("{}: {l:?}", p.display()))
        })
        .collect();
    assert!(bad.is_empty(), "root: {bad:#?}");
    let label = |rel: &str| xattr_label(&m.join(rel)).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for rel in [
        ".coreos-aleph-version.json",
        "ostree",
        "ostree/deploy/default/var",
        "ostree/repo/config",
    ] {
        seen.insert(rel, label(rel));
    }
    assert!(label("").contains(":root_t:"), "{seen:?}");
    assert!(
        xattr_label(&deployment.join("etc/selinux/config"))
            .unwrap()
            .contains(":selinux_config_t:"),
        "the deployment's /etc is labelled as /etc"
    );
    assert!(
        label("ostree/deploy/default/var").contains(":var_t:"),
        "the stateroot's var is labelled as /var: {seen:?}"
    );
    // bootupctl's state (EFI, static configs) completed with the BIOS component is the
    // state layerboot's own installer records for images whose bootupctl cannot run here:
    // the two agree byte for byte.
    assert_eq!(
        String::from_utf8(
            layerboot::disk::layerboot_bootupd_state(&deployment, true, true).unwrap()
        )
        .unwrap(),
        state_text.trim_end()
    );
    // The aleph that bootupd reads: `version`, never `build` beside it.
    let aleph: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join(".coreos-aleph-version.json")).unwrap())
            .unwrap();
    assert!(
        aleph.get("version").is_some() && aleph.get("build").is_none(),
        "{aleph}"
    );
}
