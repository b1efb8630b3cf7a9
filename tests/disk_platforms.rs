//! Issue #13 items 1-2: every cloud platform's boot image from one `layerboot disk` run
//! (one deployment), each checked by the real tool its platform's import would use or that
//! reads its format: `qemu-img info`/`check` (vmdk streamOptimized, fixed vpc, compressed
//! qcow2), GNU tar (GCE's `disk.raw`, the OVA's member order and ustar format), an XML
//! parser on the OVF descriptor, skopeo and podman on the container disk. Booting them is
//! `qemu-tests/platforms.rs`. Needs root, like `layerboot disk`.
//!
//! The definitions are the shipped ones with `compression = "image"` turned into gzip
//! level 1: compression is proven by tests/disk_stream.rs, and xz over eight artifacts
//! would add many minutes here.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerboot_testkit::layered_image::layered_image;
use serde_json::Value;

const PLATFORMS: &[(&str, &str)] = &[
    ("aws", "vmdk.gz"),
    ("azure", "vhd.gz"),
    ("gcp", "tar.gz"),
    ("ibmcloud", "qcow2.gz"),
    ("kubevirt", "ociarchive"),
    ("nutanix", "qcow2"),
    ("openstack", "qcow2.gz"),
    ("vmware", "ova"),
];

/// The shipped definitions, `image` compression turned into gzip level 1.
fn fast_definitions(dir: &Path) -> PathBuf {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    for (name, _) in PLATFORMS {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("bootimages/{name}.toml")),
        )
        .unwrap();
        std::fs::write(
            defs.join(format!("{name}.toml")),
            text.replace(
                "compression = \"image\"",
                "compression = \"gzip\"\ncompression-level = 1",
            ),
        )
        .unwrap();
    }
    defs
}

fn run(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stdout(c: &mut Command) -> String {
    String::from_utf8(run(c).stdout).unwrap()
}

fn qemu_img_info(path: &Path) -> Value {
    serde_json::from_str(&stdout(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
    ))
    .unwrap()
}

/// A fixed VHD is raw data with a footer at the end: qemu-img's probe, which looks at the
/// start, calls it raw; read as `vpc` it must then make sense.
fn qemu_img_info_as(path: &Path, format: &str) -> Value {
    serde_json::from_str(&stdout(
        Command::new("qemu-img")
            .args(["info", "--output=json", "-f", format])
            .arg(path),
    ))
    .unwrap()
}

fn gunzip(from: &Path, to: &Path) {
    let out = std::fs::File::create(to).unwrap();
    run(Command::new("gzip").arg("-dc").arg(from).stdout(out));
}

fn sha256(path: &Path) -> String {
    stdout(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `tar -tv` of an archive: (type and mode column, size, name) per member.
fn tar_listing(path: &Path) -> Vec<(String, u64, String)> {
    stdout(Command::new("tar").arg("-tvf").arg(path))
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].to_string(),
                w[2].parse().unwrap(),
                w.last().unwrap().to_string(),
            )
        })
        .collect()
}

fn head(path: &Path, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

#[test]
fn every_platform_from_one_deployment_in_the_format_its_import_takes() {
    let image = layered_image().expect("example layered image");
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = tmp.path();
    let defs = fast_definitions(dir);
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let platforms: Vec<&str> = PLATFORMS.iter().map(|(p, _)| *p).collect();
    let o = run(Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["disk", &image.oci_ref(), "-v", "--json", "--bootimages"])
        .arg(&defs)
        .arg("--output-dir")
        .arg(&out)
        .args(["-p", &platforms.join(",")]));
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        log.matches("deploying ").count(),
        1,
        "one deployment for {} platforms:\n{log}",
        platforms.len()
    );
    let reports: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports.len(), PLATFORMS.len());
    let stream: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stream.json")).unwrap()).unwrap();
    let artifacts = &stream["architectures"]["x86_64"]["artifacts"];
    let mut files = BTreeMap::new();
    let disk_size = reports[0]["disk_size"].as_u64().unwrap();
    for (report, (platform, format)) in reports.iter().zip(PLATFORMS) {
        let file = PathBuf::from(report["output"].as_str().unwrap());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(&format!("-{platform}.x86_64.{format}")),
            "{name}"
        );
        assert_eq!(report["disk_size"].as_u64(), Some(disk_size), "{platform}");
        let kargs = report["kargs"].to_string();
        assert!(
            kargs.contains(&format!("ignition.platform.id={platform}")),
            "{platform}: {kargs}"
        );
        let disk = &artifacts[platform]["formats"][format]["disk"];
        assert_eq!(disk["location"].as_str(), Some(name.as_str()), "{platform}");
        assert_eq!(
            disk["sha256"].as_str(),
            Some(sha256(&file).as_str()),
            "{platform}"
        );
        files.insert(*platform, file);
    }
    // The kernel arguments of each platform are in its own /boot: those of the first
    // (aws) do not leak into another's report, and consoles follow platforms.yaml order.
    let openstack = &reports[6]["kargs"];
    assert!(
        openstack
            .to_string()
            .contains(r#""console=ttyS0,115200n8","console=tty0""#),
        "{openstack}"
    );

    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();

    // AWS: a streamOptimized vmdk on an LSI Logic adapter, gzip'd.
    let vmdk = work.join("aws.vmdk");
    gunzip(&files["aws"], &vmdk);
    let info = qemu_img_info(&vmdk);
    assert_eq!(info["format"], "vmdk");
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(info["virtual-size"].as_u64(), Some(disk_size));
    let descriptor = String::from_utf8_lossy(&head(&vmdk, 64 << 10)).into_owned();
    assert!(
        descriptor.contains("ddb.adapterType = \"lsilogic\""),
        "vmdk descriptor: {descriptor:.400}"
    );
    run(Command::new("qemu-img").arg("check").arg(&vmdk));
    std::fs::remove_file(&vmdk).unwrap();

    // Azure: a fixed VHD of a whole number of MiB, its footer says so.
    let vhd = work.join("azure.vhd");
    gunzip(&files["azure"], &vhd);
    let info = qemu_img_info_as(&vhd, "vpc");
    assert_eq!(info["format"], "vpc");
    let virtual_size = info["virtual-size"].as_u64().unwrap();
    assert_eq!(virtual_size % (1 << 20), 0, "whole MiB");
    let len = std::fs::metadata(&vhd).unwrap().len();
    assert_eq!(
        len,
        virtual_size + 512,
        "fixed VHD: the data then a 512-byte footer"
    );
    let mut footer = vec![0u8; 512];
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&vhd).unwrap();
        f.seek(SeekFrom::Start(len - 512)).unwrap();
        f.read_exact(&mut footer).unwrap();
    }
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().unwrap()),
        2,
        "disk type fixed"
    );
    std::fs::remove_file(&vhd).unwrap();

    // GCE: exactly disk.raw, GNU format, sparse, whole GiB.
    let tar = work.join("gcp.tar");
    gunzip(&files["gcp"], &tar);
    let listing = tar_listing(&tar);
    assert_eq!(listing.len(), 1, "{listing:?}");
    assert_eq!(listing[0].2, "disk.raw");
    assert_eq!(listing[0].1 % (1 << 30), 0, "whole GiB: {}", listing[0].1);
    let header = head(&tar, 512);
    assert_eq!(&header[257..265], b"ustar  \0", "GNU (oldgnu) tar header");
    assert_eq!(header[156], b'S', "a sparse member");
    assert!(
        std::fs::metadata(&tar).unwrap().len() < listing[0].1,
        "the tar holds only the allocated data"
    );
    std::fs::remove_file(&tar).unwrap();

    // IBM Cloud and OpenStack: qcow2 images that check clean.
    for p in ["ibmcloud", "openstack"] {
        let q = work.join(format!("{p}.qcow2"));
        gunzip(&files[p], &q);
        assert_eq!(qemu_img_info(&q)["format"], "qcow2", "{p}");
        run(Command::new("qemu-img").arg("check").arg(&q));
        std::fs::remove_file(&q).unwrap();
    }

    // Nutanix: qcow2 with compressed clusters.
    let check = stdout(
        Command::new("qemu-img")
            .args(["check", "--output=json"])
            .arg(&files["nutanix"]),
    );
    let check: Value = serde_json::from_str(&check).unwrap();
    assert!(
        check["compressed-clusters"].as_u64().unwrap_or(0) > 0,
        "compressed clusters: {check}"
    );

    // VMware: ustar, the descriptor first, naming the vmdk with its real size and capacity.
    let ova = &files["vmware"];
    let listing = tar_listing(ova);
    let names: Vec<&str> = listing.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(names, ["coreos.ovf", "disk.vmdk"]);
    assert_eq!(
        &head(ova, 512)[257..263],
        b"ustar\0",
        "POSIX ustar, as OVF requires"
    );
    run(Command::new("tar").arg("-xf").arg(ova).arg("-C").arg(&work));
    let ovf = std::fs::read_to_string(work.join("coreos.ovf")).unwrap();
    let doc = roxmltree::Document::parse(&ovf).expect("well-formed OVF");
    const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
    let file = doc
        .descendants()
        .find(|n| n.has_tag_name((OVF, "File")))
        .unwrap();
    assert_eq!(file.attribute((OVF, "href")), Some("disk.vmdk"));
    assert_eq!(
        file.attribute((OVF, "size"))
            .map(|s| s.parse::<u64>().unwrap()),
        Some(listing[1].1)
    );
    let disk = doc
        .descendants()
        .find(|n| n.has_tag_name((OVF, "Disk")))
        .unwrap();
    let vmdk = work.join("disk.vmdk");
    let info = qemu_img_info(&vmdk);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(
        disk.attribute((OVF, "capacity"))
            .map(|s| s.parse::<u64>().unwrap()),
        info["virtual-size"].as_u64()
    );
    assert!(ovf.contains("<vssd:VirtualSystemType>vmx-17</vssd:VirtualSystemType>"));
    std::fs::remove_file(&vmdk).unwrap();

    // KubeVirt: an OCI archive skopeo reads and podman loads, the qcow2 under /disk/,
    // readable by KubeVirt's qemu user.
    let archive = format!("oci-archive:{}", files["kubevirt"].display());
    let inspected: Value =
        serde_json::from_str(&stdout(Command::new("skopeo").args(["inspect", &archive]))).unwrap();
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
    let layout = work.join("kubevirt-layout");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &archive])
        .arg(format!("dir:{}", layout.display())));
    let layer = layout.join(
        inspected["Layers"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let members = tar_listing(&layer);
    assert_eq!(members[0].2, "disk/");
    assert!(
        members[1].2.starts_with("disk/") && members[1].2.ends_with("-kubevirt.x86_64.qcow2"),
        "{members:?}"
    );
    let owner = stdout(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&layer),
    );
    assert!(owner.contains("107/107"), "{owner}");
    let loaded = stdout(
        Command::new("podman")
            .args(["load", "-q", "-i"])
            .arg(&files["kubevirt"]),
    );
    assert!(loaded.contains("Loaded image"), "{loaded}");
    let id = loaded.split_whitespace().last().unwrap().to_string();
    let _ = Command::new("podman").args(["rmi", "-f", &id]).output();
}

#[test]
fn platforms_that_cannot_share_a_deployment_are_refused_before_any_work() {
    let image = layered_image().expect("example layered image");
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    for (args, want) in [
        (
            vec!["-p", "qemu,metal4k"],
            "boot images qemu and metal4k have different disk layouts",
        ),
        (
            vec!["-p", "qemu", "-p", "qemu"],
            "--platform qemu is given twice",
        ),
        (
            vec!["-p", "qemu,aws", "-o", "x.img"],
            "--output names one file, and 2 platforms were asked for",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
            .current_dir(tmp.path())
            .args(["disk", &image.oci_ref()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line expected: {err}"
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{args:?} left files"
        );
    }
}
