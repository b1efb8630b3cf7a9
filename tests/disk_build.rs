//! `layerboot disk` end to end, without QEMU: a real build from the example layered image
//! (artifact, hashes, stream metadata, partition contents), bad input refused before any
//! heavy work, and a failing or interrupted build leaving nothing behind (no output, no
//! staging directory, no mount, no loop device). Needs root, like the command itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use layerboot_testkit::layered_image::{layered_image, LayeredImage};
use layerboot_testkit::registry::{LocalRegistry, Mode};

fn image() -> &'static LayeredImage {
    static I: std::sync::OnceLock<LayeredImage> = std::sync::OnceLock::new();
    I.get_or_init(|| {
        layered_image()
            .expect("example layered image (needs root, debootstrap, network to the Debian mirror)")
    })
}

fn layerboot(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerboot"));
    c.args(args);
    c
}

fn run(args: &[&str]) -> Output {
    layerboot(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Mounts under `dir` and loop devices backed by files under `dir` (other tests run in
/// parallel, so only what this test could have made counts).
fn system_state(dir: &Path) -> (Vec<String>, Vec<String>) {
    let d = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or("").to_string())
        .filter(|m| m.starts_with(&d))
        .collect();
    let loops = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|b| b.starts_with(&d))
        .collect();
    (mounts, loops)
}

/// Nothing but `allowed` in `dir` (no output, no staging directory, no temp file).
fn assert_only(dir: &Path, allowed: &[&str]) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

/// User definitions: `tiny-boot` has a /boot partition too small for the image (fails
/// after deployment, mid-build), `metal-gz` is metal compressed with gzip level 1.
fn definitions(dir: &Path) -> PathBuf {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let metal = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages/metal.toml"),
    )
    .unwrap();
    std::fs::write(
        defs.join("tiny-boot.toml"),
        metal.replace("size = \"384MiB\"", "size = \"24MiB\""),
    )
    .unwrap();
    std::fs::write(
        defs.join("metal-plain.toml"),
        metal.replace("compression = \"image\"", "compression = \"none\""),
    )
    .unwrap();
    std::fs::write(
        defs.join("metal-gz.toml"),
        metal.replace(
            "compression = \"image\"",
            "compression = \"gzip\"\ncompression-level = 1",
        ),
    )
    .unwrap();
    defs
}

#[test]
fn bad_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.raw");
    let out_s = out.to_str().unwrap();
    // A well-formed OCI image that is not an ostree-bootable one.
    let layout = dir.path().join("plain");
    make_plain_oci(&layout);
    let plain = format!("oci:{}:plain", layout.display());
    let oci = image().oci_ref();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["disk", &plain, "-o", out_s],
            "is not a bootable ostree image",
        ),
        (
            vec!["disk", &oci, "--platform", "azur", "-o", out_s],
            "unknown boot image 'azur': known are aws, azure, gcp, ibmcloud, kubevirt, live, metal,",
        ),
        (
            vec!["disk", &oci, "--size", "10 parsecs", "-o", out_s],
            "unknown unit",
        ),
        (
            vec!["disk", &oci, "--size", "100MiB", "-o", out_s],
            "disk size 100MiB is too small for this image: it needs at least",
        ),
        // Sized from the layers before deploying: refused at once too.
        (
            vec![
                "disk", &oci, "-p", "metal", "--size", "1100MiB", "-o", out_s,
            ],
            "of root content); use --size",
        ),
        (
            vec!["disk", &oci, "--karg", "ostree=/x", "-o", out_s],
            "ostree= is set by the deployment",
        ),
        (
            vec!["disk", &oci, "--stateroot", "a/b", "-o", out_s],
            "--stateroot 'a/b'",
        ),
        (
            vec!["disk", "oci:/nonexistent/layout:x", "-o", out_s],
            "OCI layout /nonexistent/layout does not exist",
        ),
        (
            vec![
                "disk",
                "docker://quay.io/acme/os",
                "--karg",
                "two words",
                "-o",
                out_s,
            ],
            "must be one non-empty word",
        ),
    ];
    for (args, want) in cases {
        // At info level the build logs each heavy step ("[   0.0s] creating the xfs root
        // filesystem", ...): none may appear before the refusal.
        let o = layerboot(&args).env("RUST_LOG", "info").output().unwrap();
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        let steps: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("[INFO  layerboot::disk] ["))
            .collect();
        assert!(
            steps.is_empty(),
            "{args:?} did heavy work before failing: {steps:?}"
        );
        let shown: Vec<&str> = err.lines().filter(|l| !l.starts_with("[INFO ")).collect();
        assert_eq!(shown.len(), 1, "{args:?}: not one line: {err}");
        assert!(shown[0].contains(want), "{args:?}: {err}");
    }
    assert_only(dir.path(), &["plain"]);
}

fn make_plain_oci(layout: &Path) {
    use sha2::{Digest, Sha256};
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&d), bytes).unwrap();
        (format!("sha256:{d}"), bytes.len())
    };
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Labels": {"org.opencontainers.image.title": "plain"}}, "rootfs": {"type": "layers", "diff_ids": []}});
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": []});
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "plain"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// A full metal build: the artifact's hashes and the stream metadata agree with the
/// bytes, the GPT is the planned one, the ESP holds the image's GRUB, /boot the generated
/// config, the first-boot stamp and the BLS entry with our kernel arguments.
#[test]
fn metal_build_is_complete_and_described() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = definitions(dir.path());
    let out = dir.path().join("metal.raw.gz");

    // Served by a loopback registry, as users' images are: pulled verified into the cache.
    let registry = LocalRegistry::start(Mode::Anonymous).unwrap();
    let pushed = registry
        .push_oci_dir(
            Path::new(&format!("{}:layered", image().oci_dir.display())),
            "acme/debian-layered:41",
        )
        .unwrap();
    let cache = dir.path().join("cache");
    let o = layerboot(&[
        "disk",
        &pushed,
        "--tls-verify=false",
        "-q",
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "metal-gz",
        "--karg",
        "quiet",
        "--base-url",
        "https://example.com/img",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ])
    .env("LAYERBOOT_CACHE", &cache)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&cache).unwrap();
    assert_eq!(
        system_state(dir.path()),
        (vec![], vec![]),
        "mounts or loop devices left behind"
    );
    assert_only(dir.path(), &["defs", "metal.raw.gz", "stream.json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The deployment's origin tracks the registry image by digest, for later updates.
    assert_eq!(
        report["origin"],
        format!(
            "ostree-unverified-registry:{}/acme/debian-layered@{}",
            registry.addr(),
            image().digest
        )
    );

    let (sha, size) = layerboot::io::sha256_file(&out).unwrap();
    assert_eq!(report["sha256"], sha);
    assert_eq!(report["size"], size);
    let raw = dir.path().join("metal.raw");
    let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap());
    std::io::copy(&mut gz, &mut std::fs::File::create(&raw).unwrap()).unwrap();
    let (usha, usize_) = layerboot::io::sha256_file(&raw).unwrap();
    assert_eq!(report["uncompressed_sha256"], usha);
    assert_eq!(
        usize_ % (256 << 20),
        0,
        "automatic size is a multiple of 256 MiB"
    );

    let stream: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stream.json")).unwrap())
            .unwrap();
    let disk =
        &stream["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.gz"]["disk"];
    assert_eq!(disk["location"], "https://example.com/img/metal.raw.gz");
    assert_eq!(disk["sha256"], sha);
    assert_eq!(disk["uncompressed-sha256"], usha);
    assert!(
        stream["architectures"]["x86_64"]["artifacts"]["metal"]["release"]
            .as_str()
            .unwrap()
            .starts_with("12.0.")
    );
    assert!(stream["metadata"]["last-modified"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let gpt = gpt::GptConfig::new().open(&raw).unwrap();
    let names: Vec<&str> = gpt.partitions().values().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root"]);
    let parts: Vec<_> = gpt.partitions().values().cloned().collect();
    let mut f = std::fs::File::open(&raw).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).unwrap();
    assert_eq!(
        &mbr[0x5c..0x64],
        &parts[0].first_lba.to_le_bytes(),
        "MBR boot code points at BIOS-BOOT"
    );

    // ESP: the image's GRUB as the removable-media loader.
    let esp = extract(
        &raw,
        parts[1].first_lba * 512,
        (parts[1].last_lba + 1 - parts[1].first_lba) * 512,
        &dir.path().join("esp.img"),
    );
    let fat = fatfs::FileSystem::new(std::fs::File::open(&esp).unwrap(), fatfs::FsOptions::new())
        .unwrap();
    let mut efi = Vec::new();
    fat.root_dir()
        .open_file("EFI/BOOT/BOOTX64.EFI")
        .unwrap()
        .read_to_end(&mut efi)
        .unwrap();
    assert_eq!(&efi[..2], b"MZ", "a PE binary");
    assert_eq!(fat.volume_label().trim_end(), "EFI-SYSTEM");

    // /boot: read rootlessly with debugfs.
    let boot = extract(
        &raw,
        parts[2].first_lba * 512,
        (parts[2].last_lba + 1 - parts[2].first_lba) * 512,
        &dir.path().join("boot.img"),
    );
    let debugfs = |req: &str| {
        String::from_utf8(
            Command::new("debugfs")
                .args(["-R", req])
                .arg(&boot)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let grub_cfg = debugfs("cat /grub/grub.cfg");
    assert!(
        grub_cfg.contains("if [ -f /ignition.firstboot ]"),
        "{grub_cfg}"
    );
    assert!(grub_cfg.contains("$ignition_firstboot"), "{grub_cfg}");
    assert!(
        debugfs("ls -l /").contains("ignition.firstboot"),
        "first-boot stamp"
    );
    let entries = debugfs("ls /loader/entries");
    let entry_name = entries
        .split_whitespace()
        .find(|w| w.ends_with(".conf"))
        .expect("a BLS entry");
    let entry = debugfs(&format!("cat /loader/entries/{entry_name}"));
    let options = entry.lines().find(|l| l.starts_with("options ")).unwrap();
    for karg in [
        "root=LABEL=root",
        "rw",
        "ignition.platform.id=metal",
        "quiet",
        "ostree=/ostree/boot.",
    ] {
        assert!(options.contains(karg), "{karg} not in {options}");
    }
    assert!(
        !options.contains("console="),
        "metal has no console karg: {options}"
    );
    // The kernel and initramfs the deploy wrote through the bind mount.
    let ostree_boot = debugfs("ls -p /ostree");
    // `ls -p` lines: /inode/mode/uid/gid/name/size/
    let os_dir = ostree_boot
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .find(|n| !n.is_empty() && *n != "." && *n != "..")
        .unwrap_or_else(|| panic!("a kernel directory in /boot/ostree: {ostree_boot}"));
    let kernels = debugfs(&format!("ls /ostree/{os_dir}"));
    assert!(
        kernels.contains("vmlinuz-") && kernels.contains("initramfs-"),
        "{kernels}"
    );

    // Root: an XFS labelled root holding the repo, the deployment (immutable, as ostree
    // makes it), the aleph file, and an empty /boot mount point. Read through a read-only
    // loop mount in a private mount namespace of its own.
    let root = &parts[3];
    let (offset, len) = (
        root.first_lba * 512,
        (root.last_lba + 1 - root.first_lba) * 512,
    );
    let blkid = Command::new("blkid")
        .args([
            "-p",
            "-O",
            &offset.to_string(),
            "-S",
            &len.to_string(),
            "-o",
            "export",
        ])
        .arg(&raw)
        .output()
        .unwrap();
    let blkid = String::from_utf8_lossy(&blkid.stdout);
    assert!(
        blkid.contains("TYPE=xfs") && blkid.contains("LABEL=root"),
        "{blkid}"
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = r#"set -e
mount -o ro,loop,offset=$2,sizelimit=$3 "$1" "$4"
cd "$4"
echo "repo: $(test -d ostree/repo/objects && echo yes)"
echo "boot: [$(ls -A boot)]"
for d in ostree/deploy/*/deploy/*.0; do echo "deployment: $d $(lsattr -d "$d" | cut -c1-20)"; echo "kernel: $(ls "$d"/usr/lib/modules/*/vmlinuz)"; done
echo "aleph: $(cat .coreos-aleph-version.json | tr -d '\n')"
echo "aleph-link: $(readlink .coreos-aleph-version.json)"
cd /
umount "$4""#;
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&raw)
        .arg(offset.to_string())
        .arg(len.to_string())
        .arg(&mnt)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}{}", seen, stderr(&o));
    assert!(seen.contains("repo: yes\n"), "{seen}");
    assert!(
        seen.contains("boot: []\n"),
        "/boot is an empty mount point: {seen}"
    );
    let deployment = seen
        .lines()
        .find_map(|l| l.strip_prefix("deployment: "))
        .unwrap_or_else(|| panic!("a deployment: {seen}"));
    assert!(
        deployment.contains(&format!(
            "/deploy/{}.0 ",
            report["ostree_commit"].as_str().unwrap()
        )),
        "the reported commit is deployed: {seen}"
    );
    assert!(
        deployment
            .split_whitespace()
            .nth(1)
            .is_some_and(|attrs| attrs.contains('i')),
        "deployment is immutable: {seen}"
    );
    assert!(
        seen.contains("/usr/lib/modules/") && seen.contains("/vmlinuz\n"),
        "{seen}"
    );
    let aleph: serde_json::Value = serde_json::from_str(
        seen.lines()
            .find_map(|l| l.strip_prefix("aleph: "))
            .unwrap(),
    )
    .unwrap();
    // As osbuild's org.osbuild.ostree.aleph writes it; bootupd refuses `build` + `version`.
    assert!(seen.contains("aleph-link: .aleph-version.json\n"), "{seen}");
    assert!(aleph.get("build").is_none(), "{aleph}");
    assert!(
        aleph["version"].as_str().unwrap().starts_with("12.0."),
        "{aleph}"
    );
    let labels = &aleph["container-image"]["image-labels"];
    assert_eq!(aleph["ostree-commit"], labels["ostree.commit"]);
    assert_eq!(
        aleph["container-image"]["image-name"],
        format!("{}/acme/debian-layered@{}", registry.addr(), image().digest)
    );
    assert!(aleph["container-image"]["image-digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    std::fs::remove_dir(&mnt).unwrap();
    assert_eq!(
        system_state(dir.path()),
        (vec![], vec![]),
        "the test's own mount went away"
    );
}

fn extract(raw: &Path, offset: u64, len: u64, to: &Path) -> PathBuf {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::copy(&mut f.take(len), &mut std::fs::File::create(to).unwrap()).unwrap();
    to.to_path_buf()
}

/// A step failing after deployment (here: /boot too small for the content) and a size
/// too small for the image's content both name the problem and leave nothing behind.
#[test]
fn failing_builds_leave_nothing_behind() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = definitions(dir.path());

    let out = dir.path().join("x.raw");
    let o = run(&[
        "disk",
        &image().oci_ref(),
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "tiny-boot",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("partition 'boot' (24MiB) is too small for its"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "disk",
        &image().oci_ref(),
        "-p",
        "metal",
        "--size",
        "1100MiB",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("disk size 1100MiB is too small for this image: it needs at least")
            && err.contains("of root content); use --size"),
        "{err}"
    );
    assert_eq!(
        system_state(dir.path()),
        (vec![], vec![]),
        "mounts or loop devices left behind"
    );
    assert_only(dir.path(), &["defs"]);
}

/// SIGTERM while the deploy helper writes into the loop-mounted root filesystem, and while
/// layerboot works on the deployed tree through `/proc/<helper>/root`: the process exits
/// non-zero after cleaning up, with no output, staging tree, mount, loop device or helper
/// process left.
#[test]
fn sigterm_mid_build_leaves_nothing_behind() {
    use std::io::BufRead;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();

    let out = dir.path().join("x.qcow2");
    for phase in ["deploying", "working through /proc/PID/root"] {
        let mut child = layerboot(&[
            "-v",
            "disk",
            &image().oci_ref(),
            "-p",
            "qemu",
            "-o",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        // The step log, line by line, kept for the failure message.
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let logger = std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let mut log = String::new();
        let t = Instant::now();
        let staging = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".layerboot-disk-")
                })
                .map(|e| e.path())
        };
        loop {
            while let Ok(l) = lines.try_recv() {
                log.push_str(&l);
                log.push('\n');
            }
            let in_phase = match phase {
                // The deploy helper's view of the mounted root: the repo is being written.
                "deploying" => staging().is_some_and(|st| {
                    helper_pids(dir.path()).iter().any(|pid| {
                        Path::new(&format!("/proc/{pid}/root"))
                            .join(
                                st.join("root/ostree/repo/objects")
                                    .strip_prefix("/")
                                    .unwrap(),
                            )
                            .is_dir()
                    })
                }),
                _ => log.contains("deployed; completing the root filesystem"),
            };
            if in_phase {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "the build never got to {phase}:\n{log}"
            );
            if let Some(status) = child.try_wait().unwrap() {
                // Wait for the last lines (the error) before reporting.
                logger.join().unwrap();
                log.extend(lines.try_iter().map(|l| l + "\n"));
                panic!("build ended ({status}) before {phase}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if phase == "deploying" {
            // Let the step get going.
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "build finished before the signal ({phase})"
        );
        assert!(
            !helper_pids(dir.path()).is_empty(),
            "the deploy helper holds the mount during {phase}"
        );
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        logger.join().unwrap();
        while let Ok(l) = lines.try_recv() {
            log.push_str(&l);
            log.push('\n');
        }
        assert!(!status.success());
        assert!(log.contains("interrupted by SIGTERM"), "{log}");
        assert_only(dir.path(), &[]);
        assert_eq!(
            system_state(dir.path()),
            (vec![], vec![]),
            "mounts or loop devices left behind ({phase})"
        );
        assert_eq!(
            processes_mentioning(dir.path()),
            Vec::<String>::new(),
            "helper processes left behind ({phase})"
        );
    }
}

/// Pids of deploy helpers working under `dir`.
fn helper_pids(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with(&format!("{}\0", env!("CARGO_BIN_EXE_layerboot-deploy")))
                && cmdline.contains(&needle)
            {
                found.push(pid);
            }
        }
    }
    found
}

/// Command lines of live processes that name `path` (the deploy helper gets the staging
/// sysroot on its command line).
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// Registry images: a non-bootable one is refused from its config before any layer is
/// fetched; a tampered layer is caught by the verified pull and nothing is written.
#[test]
fn registry_images_are_checked_and_verified() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let registry = LocalRegistry::start(Mode::Anonymous).unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("x.raw");
    let nonbootable = layerboot_testkit::ostree_image::non_bootable_image().unwrap();
    let plain = registry.push_oci_dir(&nonbootable, "acme/plain:1").unwrap();
    let o = layerboot(&[
        "disk",
        &plain,
        "--tls-verify=false",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ])
    .env("LAYERBOOT_CACHE", &cache)
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not a bootable ostree image"),
        "{}",
        stderr(&o)
    );
    let cached_blobs = std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        cached_blobs, 0,
        "layers were fetched for a non-bootable image"
    );

    let src = format!("{}:layered", image().oci_dir.display());
    let pushed = registry
        .push_oci_dir(Path::new(&src), "acme/tampered:1")
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            image()
                .oci_dir
                .join("blobs/sha256")
                .join(image().digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .parse::<layerboot::oci::reference::Digest>()
        .unwrap();
    let blob = registry.storage_blob_path(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let o = layerboot(&[
        "disk",
        &pushed,
        "--tls-verify=false",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ])
    .env("LAYERBOOT_CACHE", &cache)
    .output()
    .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&layer.to_string()),
        "the error names the bad blob: {}",
        stderr(&o)
    );
    assert_only(dir.path(), &["cache"]);
}

/// The bootupd path, offline: a disk built from the bootupd-layout image has, on its ESP,
/// exactly the image's EFI payload plus the vendor stub config and `bootuuid.cfg`; on
/// /boot, the static config assembled as bootupd does (image's pre, Ignition glue,
/// `configs.d`), with generated entries standing in for `blscfg` (Debian's GRUB lacks it),
/// `bootuuid.cfg` naming the real boot filesystem, `grubenv`, `console.cfg`, the i386-pc
/// modules; BLS options carry `$ignition_firstboot`; the MBR and BIOS-BOOT hold GRUB.
#[test]
fn bootupd_layout_image_gets_its_own_boot_chain() {
    use layerboot_testkit::bootupd_image::{bootupd_image, VENDOR};
    let img =
        bootupd_image().expect("bootupd-layout image (needs root, network to the Debian mirror)");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = dir.path().join("defs");
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
    assert!(
        raw_def.contains("format = \"raw\"\n") && raw_def.contains("compression = \"none\"\n"),
        "{raw_def}"
    );
    std::fs::write(defs.join("qemu-raw.toml"), raw_def).unwrap();
    let raw = dir.path().join("bootupd.raw");
    let o = run(&[
        "disk",
        &img.oci_ref(),
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "qemu-raw",
        "--json",
        "-o",
        raw.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // No bootupctl in this image: layerboot's own installer placed the EFI component.
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report.get("bootupctl").is_none(), "{report}");
    assert!(report["ostree_commit"].is_string(), "{report}");
    assert!(
        stderr(&o).contains("has no blscfg"),
        "the stand-in for blscfg is announced: {}",
        stderr(&o)
    );

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
    let boot = part(2, "boot.img");
    let dumpe2fs = String::from_utf8(
        Command::new("dumpe2fs")
            .arg("-h")
            .arg(&boot)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let boot_uuid = dumpe2fs
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .expect("boot fs UUID")
        .trim()
        .to_string();
    let bootuuid_cfg = format!("set BOOT_UUID=\"{boot_uuid}\"\n");

    // ESP: the payload as is, plus exactly the two configs bootupd adds.
    let esp = part(1, "esp.img");
    let fat = fatfs::FileSystem::new(std::fs::File::open(&esp).unwrap(), fatfs::FsOptions::new())
        .unwrap();
    let mut found = Vec::new();
    fn walk<T: fatfs::ReadWriteSeek>(d: fatfs::Dir<T>, prefix: &str, out: &mut Vec<String>) {
        for e in d
            .iter()
            .map(Result::unwrap)
            .filter(|e| e.file_name() != "." && e.file_name() != "..")
        {
            let p = format!("{prefix}{}", e.file_name());
            if e.is_dir() {
                walk(e.to_dir(), &format!("{p}/"), out);
            } else {
                out.push(p);
            }
        }
    }
    walk(fat.root_dir(), "", &mut found);
    found.sort();
    let mut want: Vec<String> = ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/fbx64.efi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.extend(
        [
            "BOOTX64.CSV",
            "bootuuid.cfg",
            "grub.cfg",
            "grubx64.efi",
            "mmx64.efi",
            "shimx64.efi",
        ]
        .iter()
        .map(|f| format!("EFI/{VENDOR}/{f}")),
    );
    assert_eq!(found, want, "ESP contents");
    let read = |p: &str| {
        let mut v = Vec::new();
        fat.root_dir()
            .open_file(p)
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let shim = read("EFI/BOOT/BOOTX64.EFI");
    assert_eq!(&shim[..2], b"MZ");
    assert_eq!(
        read(&format!("EFI/{VENDOR}/shimx64.efi")),
        shim,
        "the removable-media loader is the vendor's shim"
    );
    let grub = read(&format!("EFI/{VENDOR}/grubx64.efi"));
    assert!(
        grub.windows(11).any(|w| w == b"/EFI/debian"),
        "Debian's signed GRUB (prefix /EFI/debian)"
    );
    assert_eq!(
        String::from_utf8(read(&format!("EFI/{VENDOR}/grub.cfg"))).unwrap(),
        include_str!("../testkit/src/bootupd/grub-static-efi.cfg"),
        "the image's grub-static-efi.cfg"
    );
    assert_eq!(
        String::from_utf8(read(&format!("EFI/{VENDOR}/bootuuid.cfg"))).unwrap(),
        bootuuid_cfg
    );

    // /boot, read rootlessly with debugfs.
    let debugfs = |req: &str| {
        String::from_utf8(
            Command::new("debugfs")
                .args(["-R", req])
                .arg(&boot)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let cfg = debugfs("cat /grub2/grub.cfg");
    let pre = include_str!("../testkit/src/bootupd/grub-static-pre.cfg");
    assert!(
        cfg.contains(pre),
        "the image's grub-static-pre.cfg heads grub.cfg:\n{cfg}"
    );
    let begins: Vec<&str> = cfg
        .lines()
        .filter_map(|l| l.strip_prefix("### BEGIN "))
        .collect();
    assert_eq!(
        begins,
        [
            "00_layerboot-timeout.cfg ###",
            "05_ignition.cfg ###",
            "10_blscfg.cfg ###"
        ],
        "{cfg}"
    );
    assert!(
        !cfg.lines().any(|l| l.trim() == "blscfg"),
        "blscfg replaced: {cfg}"
    );
    let linux = cfg
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("linux /ostree/"))
        .unwrap_or_else(|| panic!("a generated entry: {cfg}"));
    assert!(
        linux.contains(" ostree=/ostree/boot.") && linux.ends_with(" $ignition_firstboot"),
        "{linux}"
    );
    assert_eq!(linux.matches("ignition_firstboot").count(), 1, "{linux}");
    assert!(
        debugfs("stat /grub2/grub.cfg").contains("Mode:  0600"),
        "grub.cfg is 0600 as bootupd writes it"
    );
    assert_eq!(debugfs("cat /grub2/bootuuid.cfg"), bootuuid_cfg);
    // Byte for byte what GRUB's own tool creates (bootupd runs it for its static configs).
    let created = dir.path().join("grubenv-created");
    let o = Command::new("grub-editenv")
        .arg(&created)
        .arg("create")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        debugfs("cat /grub2/grubenv"),
        std::fs::read_to_string(&created).unwrap()
    );
    assert!(debugfs("cat /grub2/console.cfg").starts_with("serial --unit=0 --speed=115200\n"));
    assert!(
        debugfs("ls /grub2/i386-pc").contains("normal.mod"),
        "BIOS modules on /boot"
    );
    assert!(
        !debugfs("ls /").contains(" grub "),
        "no plain-GRUB config beside bootupd's"
    );
    assert!(
        debugfs("ls -l /").contains("ignition.firstboot"),
        "first-boot stamp"
    );
    let entries = debugfs("ls /loader/entries");
    let entry_name = entries
        .split_whitespace()
        .find(|w| w.ends_with(".conf"))
        .expect("a BLS entry");
    let options = debugfs(&format!("cat /loader/entries/{entry_name}"));
    let options = options.lines().find(|l| l.starts_with("options ")).unwrap();
    assert!(
        options.ends_with(" $ignition_firstboot") && options.contains("ignition.platform.id=qemu"),
        "{options}"
    );

    // BIOS: MBR boot code and the core image's blocklist point into BIOS-BOOT.
    let mut f = std::fs::File::open(&raw).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).unwrap();
    assert_eq!(&mbr[0x5c..0x64], &parts[0].first_lba.to_le_bytes());
    let core = part(0, "biosboot.img");
    let core = std::fs::read(core).unwrap();
    assert_eq!(
        &core[0x1f4..0x1fc],
        &(parts[0].first_lba + 1).to_le_bytes(),
        "core image loads its rest from the next sector"
    );
}

/// A CoreOS image (the CoreOS-like fixture: platforms.json, image.json,
/// com.coreos.osname) gets its disk the CoreOS way: kernel arguments and GRUB console from
/// the image, no `root=`, console.cfg with coreos-installer's markers, platforms.json on
/// /boot, the osname stateroot, sentinel identifiers, CoreOS's mkfs options, bootprefix,
/// an immutable physical root.
#[test]
fn coreos_image_disk_is_built_the_coreos_way() {
    use layerboot::disk::coreos;
    use layerboot_testkit::coreos_image::{coreos_image, IMAGE_JSON, OSNAME, PLATFORMS_JSON};
    let img = coreos_image().expect("CoreOS-like fixture");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let qemu =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages/qemu.toml"))
            .unwrap();
    // The qemu platform as an uncompressed raw disk, to read it back directly.
    std::fs::write(
        defs.join("qemu-raw.toml"),
        qemu.replace("format = \"qcow2\"", "format = \"raw\"")
            .replace(
                "compression = \"gzip\"\ncompression-level = 1",
                "compression = \"none\"",
            ),
    )
    .unwrap();
    let raw = dir.path().join("coreos.raw");
    let o = layerboot(&[
        "disk",
        &img.oci_ref(),
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "qemu-raw",
        "-o",
        raw.to_str().unwrap(),
        "--json",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kargs: Vec<&str> = report["kargs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        kargs,
        [
            "rw",
            "console=tty0",
            "console=ttyS0,115200n8",
            "mitigations=auto,nosmt",
            "layerboot.fixture=coreos",
            "ignition.platform.id=qemu"
        ]
    );

    let gpt = gpt::GptConfig::new().open(&raw).unwrap();
    assert_eq!(gpt.guid().to_string(), coreos::SENTINEL_DISK_GUID);
    let parts: Vec<_> = gpt.partitions().values().cloned().collect();
    let region =
        |p: &gpt::partition::Partition| (p.first_lba * 512, (p.last_lba + 1 - p.first_lba) * 512);
    let blkid = |p: &gpt::partition::Partition| {
        let (offset, len) = region(p);
        let o = Command::new("blkid")
            .args([
                "-p",
                "-O",
                &offset.to_string(),
                "-S",
                &len.to_string(),
                "-o",
                "export",
            ])
            .arg(&raw)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        blkid(&parts[1]).contains(&format!("UUID={}", coreos::ESP_VOLUME_ID)),
        "{}",
        blkid(&parts[1])
    );
    assert!(blkid(&parts[2]).contains(&format!("UUID={}", coreos::SENTINEL_BOOT_FS_UUID)));
    assert!(blkid(&parts[3]).contains(&format!("UUID={}", coreos::SENTINEL_ROOT_FS_UUID)));

    let (offset, len) = region(&parts[2]);
    let boot = extract(&raw, offset, len, &dir.path().join("boot.img"));
    let debugfs = |req: &str| {
        String::from_utf8(
            Command::new("debugfs")
                .args(["-R", req])
                .arg(&boot)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let console = debugfs("cat /grub2/console.cfg");
    assert!(
        console.contains("\n# CONSOLE-SETTINGS-START\nserial --speed=115200\nterminal_input serial console\nterminal_output serial console\n# CONSOLE-SETTINGS-END\n"),
        "{console}"
    );
    let grub_cfg = debugfs("cat /grub2/grub.cfg");
    assert!(
        grub_cfg.contains("source $prefix/console.cfg"),
        "{grub_cfg}"
    );
    // The fixture's GRUB (2.14's modules) has blscfg: the menu comes from the BLS entries
    // at boot, as on CoreOS, with the module on /boot for `insmod`.
    assert!(
        grub_cfg.contains("\ninsmod blsuki\nblscfg\n") && !grub_cfg.contains("menuentry"),
        "{grub_cfg}"
    );
    for platform in ["x86_64-efi", "i386-pc"] {
        assert!(
            debugfs(&format!("ls /grub2/{platform}")).contains("blsuki.mod"),
            "blsuki.mod in /grub2/{platform}"
        );
    }
    assert_eq!(debugfs("cat /coreos/platforms.json"), PLATFORMS_JSON);
    let entries = debugfs("ls /loader/entries");
    let entry_name = entries
        .split_whitespace()
        .find(|w| w.ends_with(".conf"))
        .expect("a BLS entry");
    let entry = debugfs(&format!("cat /loader/entries/{entry_name}"));
    let options = entry.lines().find(|l| l.starts_with("options ")).unwrap();
    assert!(!options.contains("root="), "CoreOS has no root=: {options}");
    assert!(
        options
            .split_whitespace()
            .any(|a| a == "$ignition_firstboot"),
        "blscfg expands $ignition_firstboot from the entry, as CoreOS's GRUB does: {options}"
    );
    assert!(
        options.contains(&format!("ostree=/ostree/boot.1/{OSNAME}/")),
        "{options}"
    );
    // bootprefix: BLS paths under /boot resolve through `boot -> .` (the build host's
    // libostree decides whether this disk's own entries carry the prefix).
    let link = debugfs("stat /boot");
    assert!(
        link.contains("Type: symlink") && link.contains("\".\""),
        "{link}"
    );
    let stats = debugfs("stats");
    assert!(stats.contains("metadata_csum_seed"), "{stats}");

    let (offset, len) = region(&parts[3]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let script = r#"set -e
mount -o ro,loop,offset=$2,sizelimit=$3 "$1" "$4"
cd "$4"
echo "stateroots: $(ls ostree/deploy)"
echo "root-attrs: $(lsattr -d . | cut -c1-20)"
echo "repo: $(tr '\n' ' ' < ostree/repo/config)"
echo "aleph-link: $(readlink .coreos-aleph-version.json)"
echo "xfs: $(xfs_info "$4" | tr '\n' ' ')"
cd /
umount "$4""#;
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&raw)
        .arg(offset.to_string())
        .arg(len.to_string())
        .arg(&mnt)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}{}", seen, stderr(&o));
    assert!(seen.contains(&format!("stateroots: {OSNAME}\n")), "{seen}");
    let attrs = seen
        .lines()
        .find_map(|l| l.strip_prefix("root-attrs: "))
        .unwrap();
    assert!(attrs.contains('i'), "physical root immutable: {seen}");
    assert!(seen.contains("bootprefix=true"), "{seen}");
    assert!(seen.contains("readonly=true"), "{seen}");
    assert!(
        seen.contains("bls-append-except-default=grub_users=\"\""),
        "{seen}"
    );
    assert!(seen.contains("aleph-link: .aleph-version.json\n"), "{seen}");
    assert!(seen.contains("agcount=2"), "{seen}");
    // What the image said came from the image: image.json's extra-kargs (checked above).
    assert!(IMAGE_JSON.contains("layerboot.fixture=coreos"));
    std::fs::remove_dir(&mnt).unwrap();
    assert_eq!(system_state(dir.path()), (vec![], vec![]));
}

/// An output directory on a filesystem too small for the disk: refused before any work
/// when even the deployment cannot fit, and when it runs out midway (the loop device
/// turning the host's ENOSPC into I/O errors), the error names that filesystem, not the
/// root filesystem inside the image. Either way the directory is left as it was.
#[test]
fn a_full_output_filesystem_is_named_and_left_as_it_was() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mount_tmpfs = |size: &str| {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&small)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", small.display());
    };
    let unmount = || {
        assert!(Command::new("umount")
            .arg(&small)
            .status()
            .unwrap()
            .success());
    };
    let defs = definitions(dir.path());
    let out = small.join("x.raw");
    let build = || {
        run(&[
            "disk",
            &image().oci_ref(),
            "--bootimages",
            defs.to_str().unwrap(),
            "-p",
            "metal-plain",
            "-o",
            out.to_str().unwrap(),
        ])
    };

    mount_tmpfs("64m");
    let o = build();
    let err = stderr(&o);
    assert!(!o.status.success());
    let prefix = format!(
        "{} has 64MiB free, but the deployment alone writes about ",
        small.display()
    );
    let need = err
        .lines()
        .find_map(|l| l.strip_prefix("error: ")?.strip_prefix(&prefix))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_only(&small, &[]);
    unmount();

    // Room for the deployment's estimate but not for the boot files and the rest.
    let need_mib = need
        .strip_suffix("MiB")
        .map(|m| m.parse::<f64>().unwrap())
        .or_else(|| Some(need.strip_suffix("GiB")?.parse::<f64>().unwrap() * 1024.0))
        .unwrap_or_else(|| panic!("size {need}"));
    mount_tmpfs(&format!("{}m", need_mib.ceil() as u64 + 16));
    let o = build();
    let err = stderr(&o);
    unmount_after(&small, unmount, || {
        assert!(!o.status.success(), "the build fit after all: {err}");
        assert!(
            err.contains(&format!(
                "the filesystem holding {} ran out of space (",
                small.display()
            )) && err.contains("free space there or write the output to a larger filesystem"),
            "{err}"
        );
        assert!(!err.contains("pass a larger --size"), "{err}");
        assert_only(&small, &[]);
    });
    assert_eq!(
        system_state(dir.path()),
        (vec![], vec![]),
        "mounts or loop devices left behind"
    );
}

/// Runs `check`, then `unmount`, even when `check` panics (the tempdir's cleanup cannot
/// remove a mount point).
fn unmount_after(_dir: &Path, unmount: impl FnOnce(), check: impl FnOnce()) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    unmount();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// The disk's filesystems get the image's mkfs defaults, not the build host's: /boot's
/// ext4 features come from the image's `/etc/mke2fs.conf`, and a root made by a build
/// host's mkfs.xfs with other defaults than the image's (here: a host mkfs.xfs that
/// leaves out bigtime, as xfsprogs before 5.15 does) is noticed by asking the image's
/// own mkfs.xfs, and the build is redone with the image's features.
#[test]
fn filesystems_get_the_image_s_mkfs_defaults() {
    use layerboot_testkit::layered_image::{append_layer, LayerEntry, LAYERED_TAG};
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let defs = definitions(dir.path());
    // Hard links into the fixture cache: append_layer adds blobs and replaces index.json
    // by rename, so the cached fixture is never written.
    let oci = dir.path().join("oci");
    assert!(Command::new("cp")
        .arg("-al")
        .arg(&image().oci_dir)
        .arg(&oci)
        .status()
        .unwrap()
        .success());
    let conf = "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
        \tdefault_mntopts = acl,user_xattr\n\tblocksize = 4096\n\tinode_size = 256\n\tinode_ratio = 16384\n\
        [fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,dir_nlink,extra_isize,orphan_file\n\t}\n";
    append_layer(
        &oci,
        LAYERED_TAG,
        "mkfs",
        &[LayerEntry::File {
            path: "etc/mke2fs.conf".into(),
            mode: 0o644,
            content: conf.as_bytes().to_vec(),
        }],
        "COPY mke2fs.conf /etc/ (orphan_file on, 64bit off)",
        &[],
    )
    .unwrap();
    // A build host whose mkfs.xfs makes no bigtime unless told to.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = Command::new("sh")
        .args(["-c", "command -v mkfs.xfs"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    assert!(!real.is_empty(), "mkfs.xfs on PATH");
    let wrapper = bin.join("mkfs.xfs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *bigtime=*) exec {real} \"$@\";; *) exec {real} -m bigtime=0 \"$@\";; esac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let raw = dir.path().join("metal.raw");
    let o = layerboot(&[
        "disk",
        &format!("oci:{}:mkfs", oci.display()),
        "--bootimages",
        defs.to_str().unwrap(),
        "-p",
        "metal-plain",
        "-o",
        raw.to_str().unwrap(),
    ])
    .env("PATH", &path)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("bigtime 0 → 1") && log.contains("building again with the image's"),
        "{log}"
    );

    let gpt = gpt::GptConfig::new().open(&raw).unwrap();
    let part = |name: &str| {
        gpt.partitions()
            .values()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("a partition named {name}"))
            .clone()
    };
    let region =
        |p: &gpt::partition::Partition| (p.first_lba * 512, (p.last_lba + 1 - p.first_lba) * 512);
    // XFS superblock: sb_features_incompat (big-endian) at byte 216; BIGTIME is bit 3.
    let (root_offset, _) = region(&part("root"));
    let mut sb = [0u8; 512];
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&raw).unwrap();
        f.seek(SeekFrom::Start(root_offset)).unwrap();
        f.read_exact(&mut sb).unwrap();
    }
    assert_eq!(&sb[..4], b"XFSB");
    let incompat = u32::from_be_bytes(sb[216..220].try_into().unwrap());
    assert_ne!(
        incompat & (1 << 3),
        0,
        "root XFS without bigtime: {incompat:#x}"
    );

    let (offset, len) = region(&part("boot"));
    let boot = extract(&raw, offset, len, &dir.path().join("boot.img"));
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&boot)
        .output()
        .unwrap();
    let features = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:").map(str::to_string))
        .expect("dumpe2fs reports the features");
    let has = |f: &str| features.split_whitespace().any(|x| x == f);
    assert!(has("orphan_file") && !has("64bit"), "/boot: {features}");
}
