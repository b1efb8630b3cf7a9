//! `layerboot disk -p live` end to end, without QEMU: the live ISO and PXE set built from
//! the live-capable example image, checked against what CoreOS's tools expect of them
//! (the real coreos-installer reads and rewrites the ISO's embed areas and extracts the
//! PXE set from it), and an image that cannot boot live refused. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerboot_testkit::layered_image::layered_image;
use layerboot_testkit::live_image::live_image;
use serde_json::Value;

fn layerboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn coreos_installer(args: &[&str]) -> String {
    ok(Command::new("coreos-installer").args(args))
}

fn metal_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// `coreos-installer dev extract osmet` onto a loop device of `sector_size` over a new
/// sparse file of `len` bytes at `dest`; fails the test unless coreos-installer succeeds
/// (it checks the image's sha256 packed in the osmet file).
fn extract_osmet(osmet: &Path, repo: &Path, dest: &Path, len: u64, sector_size: u32) -> PathBuf {
    std::fs::File::create(dest).unwrap().set_len(len).unwrap();
    let dev = ok(Command::new("losetup")
        .args([
            "--find",
            "--show",
            "--sector-size",
            &sector_size.to_string(),
        ])
        .arg(dest));
    let dev = dev.trim().to_string();
    let extracted = Command::new("coreos-installer")
        .args(["dev", "extract", "osmet", "--osmet"])
        .arg(osmet)
        .arg(repo)
        .arg(&dev)
        .output()
        .unwrap();
    ok(Command::new("losetup").args(["-d", &dev]));
    assert!(
        extracted.status.success(),
        "{}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    dest.to_path_buf()
}

/// Leave `count` free loop devices, the lowest (the next `losetup --find` picks them),
/// with partitions as a user that detached without deleting them leaves them: added by
/// `partx` to a device without `--partscan`, which the kernel keeps after the detach.
/// Returns the devices and the GPT file used.
fn leave_stale_partitions_on_free_loop_devices(dir: &Path, count: usize) -> (Vec<String>, PathBuf) {
    let gpt = dir.join("stale-partitions.img");
    std::fs::File::create(&gpt)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q"])
        .arg(&gpt)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,2M\n,2M\n,2M\n,\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let devices: Vec<String> = (0..count)
        .map(|_| {
            let dev = ok(Command::new("losetup")
                .args(["--find", "--show", "--read-only"])
                .arg(&gpt));
            let dev = dev.trim().to_string();
            ok(Command::new("partx").args(["-a", &dev]));
            dev
        })
        .collect();
    for dev in &devices {
        ok(Command::new("losetup").args(["-d", dev]));
        if !Path::new(&format!("/sys/class/block/{}p4", name(Path::new(dev)))).exists() {
            eprintln!("{dev} dropped its partitions on detach: this kernel leaves none stale");
        }
    }
    (devices, gpt)
}

/// Drop what [`leave_stale_partitions_on_free_loop_devices`] left where nobody took the
/// device since: attaching with `--partscan` drops a loop device's old partitions.
fn drop_stale_partitions((devices, gpt): &(Vec<String>, PathBuf)) {
    for dev in devices {
        if Path::new(&format!("/sys/class/block/{}p1", name(Path::new(dev)))).exists() {
            // Another test may have taken the device meanwhile: then it is not ours to clean.
            let attached = Command::new("losetup")
                .args(["--read-only", "--partscan", dev])
                .arg(gpt)
                .status()
                .unwrap();
            if attached.success() {
                ok(Command::new("losetup").args(["-d", dev]));
            }
        }
    }
}

fn sha256(p: &Path) -> String {
    layerboot::io::sha256_file(p).unwrap().0
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn live_iso_and_pxe_set_are_coreos_installer_compatible() {
    let image = live_image().expect("live example image");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // The metal disk beside the live set (one deployment), uncompressed to compare.
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("metal.toml"),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages/metal.toml"),
        )
        .unwrap()
        .replace("compression = \"image\"", "compression = \"none\""),
    )
    .unwrap();
    // The osmet packing runs the image's coreos-installer on a loop device: it must get
    // one even when the devices it is likely to be given carry another user's partitions.
    let poisoned = leave_stale_partitions_on_free_loop_devices(dir.path(), 3);
    let o = layerboot(&[
        "-q",
        "disk",
        &image.oci_ref(),
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "metal,live",
        "--output-dir",
        out.to_str().unwrap(),
        "--base-url",
        "http://127.0.0.1:8080/s/",
        "--json",
    ]);
    drop_stale_partitions(&poisoned);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let metal = PathBuf::from(report[0]["output"].as_str().unwrap());
    let r = &report[1];
    let iso = PathBuf::from(r["output"].as_str().unwrap());
    assert!(name(&iso).ends_with("-live.x86_64.iso"), "{iso:?}");
    assert_eq!(r["sha256"], sha256(&iso));

    // The PXE set beside it, named as CoreOS names it, each in the report.
    let stem = name(&iso).trim_end_matches(".x86_64.iso").to_string();
    let others: Vec<(String, String, String)> = r["other_artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let p = PathBuf::from(a["output"].as_str().unwrap());
            assert_eq!(a["sha256"], sha256(&p), "{p:?}");
            (
                name(&p),
                a["stream_format"].as_str().unwrap().to_string(),
                a["stream_entry"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |suffix: &str, entry: &str| (format!("{stem}{suffix}"), "pxe".into(), entry.into());
    assert_eq!(
        others,
        [
            want("-kernel.x86_64", "kernel"),
            want("-initramfs.x86_64.img", "initramfs"),
            want("-rootfs.x86_64.img", "rootfs"),
        ]
    );
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}"); // metal, the four and stream.json

    // Stream metadata: metal's iso and pxe formats, as coreos-installer and
    // openshift-install read them.
    let stream: Value =
        serde_json::from_slice(&std::fs::read(out.join("stream.json")).unwrap()).unwrap();
    let formats = &stream["architectures"]["x86_64"]["artifacts"]["metal"]["formats"];
    assert_eq!(formats["raw"]["disk"]["sha256"], sha256(&metal));
    assert_eq!(formats["iso"]["disk"]["sha256"], sha256(&iso));
    assert_eq!(
        formats["iso"]["disk"]["location"],
        format!("http://127.0.0.1:8080/s/{}", name(&iso))
    );
    for (entry, suffix) in [
        ("kernel", "-kernel.x86_64"),
        ("initramfs", "-initramfs.x86_64.img"),
        ("rootfs", "-rootfs.x86_64.img"),
    ] {
        let p = out.join(format!("{stem}{suffix}"));
        assert_eq!(formats["pxe"][entry]["sha256"], sha256(&p), "{entry}");
    }

    // rootfs.img: root.squashfs first, at the offset the live initramfs mounts it from,
    // holding the metal disk's root with its /boot and ESP.
    let rootfs = out.join(format!("{stem}-rootfs.x86_64.img"));
    let head = {
        use std::io::Read;
        let mut b = vec![0u8; 128];
        std::fs::File::open(&rootfs)
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        b
    };
    assert_eq!(&head[110..124], b"root.squashfs\0");
    assert_eq!(&head[124..128], b"hsqs");
    let listing = ok(Command::new("unsquashfs")
        .args(["-o", "124", "-lc"])
        .arg(&rootfs));
    for want in [
        "squashfs-root/.aleph-version.json",
        "squashfs-root/boot/loader",
        "/entries/ostree-1-",
        "squashfs-root/boot/efi/EFI/BOOT/BOOTX64.EFI",
        "/usr/share/layered-ok/marker",
        "/usr/bin/coreos-installer",
    ] {
        assert!(listing.contains(want), "root.squashfs lacks {want}");
    }

    // Offline install data: the osmet file in rootfs.img and the ostree repo in
    // root.squashfs rebuild, with coreos-installer, exactly the metal disk published beside.
    assert_eq!(r["live"]["offline_install"], true);
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    ok(Command::new("coreos-installer")
        .args(["dev", "extract", "initrd", "-C"])
        .arg(&x)
        .arg(&rootfs));
    let osmet = x.join(format!("{}.osmet", name(&metal)));
    assert!(osmet.is_file(), "no {osmet:?} in rootfs.img");
    ok(Command::new("unsquashfs")
        .args(["-q", "-d"])
        .arg(x.join("sq"))
        .arg(x.join("root.squashfs"))
        .arg("ostree/repo"));
    let repo = x.join("sq/ostree/repo");
    let rebuilt = extract_osmet(
        &osmet,
        &repo,
        &x.join("rebuilt.raw"),
        metal_len(&metal),
        512,
    );
    assert_eq!(
        sha256(&rebuilt),
        sha256(&metal),
        "osmet rebuilds the metal disk"
    );
    std::fs::remove_file(&rebuilt).unwrap();

    // ... and a 4Kn metal disk, built from the same image for this (definition
    // osmet-images), which coreos-installer rebuilds onto a 4096-byte-sector device (it
    // checks the sha256 packed with it) with its GPT at byte 4096.
    let osmet4k = x.join(format!(
        "{}.osmet",
        name(&metal).replace("-metal.x86_64.raw", "-metal4k.x86_64.raw")
    ));
    assert!(osmet4k.is_file(), "no {osmet4k:?} in rootfs.img");
    assert!(
        !std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| name(&e.unwrap().path()).contains("metal4k")),
        "the metal4k disk was published"
    );
    let rebuilt4k = extract_osmet(
        &osmet4k,
        &repo,
        &x.join("rebuilt4k.raw"),
        metal_len(&metal) + (64 << 20),
        4096,
    );
    let mut head = [0u8; 4104];
    std::io::Read::read_exact(&mut std::fs::File::open(&rebuilt4k).unwrap(), &mut head).unwrap();
    assert_eq!(&head[4096..4104], b"EFI PART", "no 4Kn GPT header");
    std::fs::remove_dir_all(&x).unwrap();

    // The ISO: hybrid (MBR signature and a GPT), El Torito for BIOS and UEFI.
    let bytes = std::fs::read(&iso).unwrap();
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
    assert_eq!(&bytes[512..520], b"EFI PART");
    let eltorito = ok(Command::new("xorriso")
        .args(["-indev"])
        .arg(&iso)
        .args(["-report_el_torito", "plain"]));
    assert!(
        eltorito.contains("BIOS") && eltorito.contains("UEFI"),
        "{eltorito}"
    );

    // coreos-installer reads the kargs embed area: the default is what the report says.
    let iso_s = iso.to_str().unwrap();
    let default = coreos_installer(&["iso", "kargs", "show", "--default", iso_s]);
    assert_eq!(
        default.trim(),
        r["live"]["kernel_arguments"].as_str().unwrap()
    );
    assert!(default.contains(&format!(
        "coreos.liveiso={}",
        r["live"]["volume_id"].as_str().unwrap()
    )));
    assert!(
        !default.contains("ostree=") && !default.contains("root="),
        "{default}"
    );
    assert_eq!(r["live"]["installer_config"], true);

    // ... and rewrites it and the Ignition area in a copy.
    let copy = dir.path().join("custom.iso");
    std::fs::copy(&iso, &copy).unwrap();
    let copy_s = copy.to_str().unwrap();
    let ign = dir.path().join("c.ign");
    std::fs::write(&ign, r#"{"ignition":{"version":"3.4.0"}}"#).unwrap();
    coreos_installer(&[
        "iso",
        "ignition",
        "embed",
        "-i",
        ign.to_str().unwrap(),
        copy_s,
    ]);
    assert_eq!(
        coreos_installer(&["iso", "ignition", "show", copy_s]).trim(),
        r#"{"ignition":{"version":"3.4.0"}}"#
    );
    coreos_installer(&[
        "iso",
        "kargs",
        "modify",
        "-a",
        "console=ttyS0,115200n8",
        copy_s,
    ]);
    assert!(coreos_installer(&["iso", "kargs", "show", copy_s])
        .trim()
        .ends_with("console=ttyS0,115200n8"));
    // coreos-installer's customize, into a new ISO, reads the areas too.
    let customized = dir.path().join("customized.iso");
    coreos_installer(&[
        "iso",
        "customize",
        "--live-karg-append",
        "layerboot.test=1",
        "--live-ignition",
        ign.to_str().unwrap(),
        "-o",
        customized.to_str().unwrap(),
        iso_s,
    ]);
    assert!(
        coreos_installer(&["iso", "kargs", "show", customized.to_str().unwrap()])
            .contains("layerboot.test=1")
    );
    std::fs::remove_file(&customized).unwrap();
    // layerboot's own reader sees the same.
    let show = layerboot(&["iso", "show", copy_s]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("console=ttyS0,115200n8"));

    // The minimal ISO (no rootfs.img; the rootfs fetched from a URL) comes back out of the
    // full one, from the miniso.dat the image's coreos-installer packed.
    assert_eq!(r["live"]["minimal_iso"], true);
    let minimal = dir.path().join("minimal.iso");
    let minimal_s = minimal.to_str().unwrap();
    coreos_installer(&[
        "iso",
        "extract",
        "minimal-iso",
        "--rootfs-url",
        "http://192.0.2.1/rootfs.img",
        iso_s,
        minimal_s,
    ]);
    let minimal_kargs = coreos_installer(&["iso", "kargs", "show", minimal_s]);
    assert!(
        minimal_kargs.contains("coreos.live.rootfs_url=http://192.0.2.1/rootfs.img")
            && !minimal_kargs.contains("coreos.liveiso="),
        "{minimal_kargs}"
    );
    let minimal_files = ok(Command::new("xorriso")
        .args(["-indev", minimal_s, "-find", "/", "-type", "f"])
        .stderr(std::process::Stdio::null()));
    assert!(
        minimal_files.contains("/images/pxeboot/vmlinuz")
            && !minimal_files.contains("rootfs.img")
            && !minimal_files.contains("miniso.dat"),
        "{minimal_files}"
    );
    assert!(
        std::fs::metadata(&minimal).unwrap().len() * 2 < std::fs::metadata(&iso).unwrap().len(),
        "the minimal ISO is not much smaller than the full one"
    );
    std::fs::remove_file(&minimal).unwrap();

    // The PXE set extracted from the ISO is the one published beside it.
    let px = dir.path().join("pxe");
    std::fs::create_dir(&px).unwrap();
    coreos_installer(&["iso", "extract", "pxe", "-o", px.to_str().unwrap(), iso_s]);
    let iso_stem = name(&iso).trim_end_matches(".iso").to_string();
    for (extracted, ours) in [
        ("vmlinuz", "-kernel.x86_64"),
        ("initrd.img", "-initramfs.x86_64.img"),
        ("rootfs.img", "-rootfs.x86_64.img"),
    ] {
        assert_eq!(
            sha256(&px.join(format!("{iso_stem}-{extracted}"))),
            sha256(&out.join(format!("{stem}{ours}"))),
            "{extracted}"
        );
    }
}

#[test]
fn image_that_cannot_boot_live_is_refused_and_leaves_nothing() {
    let image = layered_image().expect("example layered image");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let args = [
        "disk",
        &image.oci_ref(),
        "-p",
        "live",
        "--output-dir",
        dir.path().to_str().unwrap(),
    ];
    let o = layerboot(&args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot boot live") && err.contains("is-live-image"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Refused at the plan, from the image's layers: no disk was created, nothing deployed.
    let o = layerboot(&[&["-v"], &args[..]].concat());
    assert!(!o.status.success());
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("cannot boot live"), "{log}");
    assert!(
        !log.contains("creating the") && !log.contains("deploying"),
        "refused only after work began: {log}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
