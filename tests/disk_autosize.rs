//! The automatic root size holds for every shipped boot image definition (issue #15 item 0).
//!
//! Two images are the hard shapes for a size estimate from the layers:
//! - `selinux`: Debian's SELinux policy in a derived layer over the example's unlabelled
//!   ostree base. ostree-ext labels the merge commit from that policy, writing every file
//!   object a second time (this failed `-p metal` every time with ostree's "min-free-space-
//!   percent '3%' would be exceeded" under the old rule).
//! - `tight`: the example image plus one derived layer of [`SMALL_FILES`] files of 1 to 512
//!   bytes (1 KiB of tar each, but a 4 KiB block, a 512-byte inode and dirents once
//!   deployed) and a few MiB of random bytes; sized from its tar length (the old rule, 1.2 x
//!   tar + 128 MiB) its root ran out of space.
//!
//! Each shipped layout (compression off: it does not change the layout and would only
//! add minutes) is built auto-sized from each image [`rounds`] times, and every build must
//! succeed. `LAYERBOOT_AUTOSIZE_ROUNDS` raises the rounds for a longer soak (the issue saw
//! 2 failures in 5 runs). Needs root, like `layerboot disk`.

use std::path::{Path, PathBuf};
use std::process::Command;

use layerboot_testkit::layered_image::{append_layer, LayerEntry};

const SMALL_FILES: u32 = 110_000;
const FILES_PER_DIR: u32 = 500;
const RANDOM_MIB: usize = 4;
const TAG: &str = "tight";

fn rounds() -> u32 {
    std::env::var("LAYERBOOT_AUTOSIZE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The example's layout, blobs hard-linked, with the tight layer tagged [`TAG`].
fn tight_image(dir: &Path) -> PathBuf {
    let base = layerboot_testkit::layered_image::layered_image()
        .expect("example image (needs root, debootstrap, ostree)");
    let oci = dir.join("oci");
    let st = Command::new("cp")
        .arg("-al")
        .arg(&base.oci_dir)
        .arg(&oci)
        .status()
        .unwrap();
    assert!(st.success(), "cp -al {}", base.oci_dir.display());
    // Deterministic sizes 1..=512 and content, so every run builds the same image.
    let mut entries: Vec<LayerEntry> = (0..SMALL_FILES)
        .map(|i| {
            let size = (i.wrapping_mul(2_654_435_761) >> 23) % 512 + 1;
            LayerEntry::File {
                path: format!("usr/share/tight/d{:04}/f{i:06}", i / FILES_PER_DIR),
                mode: 0o644,
                content: vec![(i % 251) as u8; size as usize],
            }
        })
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..RANDOM_MIB << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    entries.push(LayerEntry::File {
        path: "usr/share/tight/random.bin".into(),
        mode: 0o644,
        content: random,
    });
    append_layer(
        &oci,
        layerboot_testkit::layered_image::LAYERED_TAG,
        TAG,
        &entries,
        "RUN many small files && ostree container commit (layerboot autosize test)",
        &[],
    )
    .unwrap();
    oci
}

/// One shipped definition per distinct layout (sector size and partitions: the root's
/// size depends on nothing else), compression off, in `dir`; their names. Of the
/// definitions sharing a layout the plainest is built (unpackaged, raw or qcow2): the
/// others differ only in the conversion after the root is unmounted.
fn uncompressed_definitions(dir: &Path) -> Vec<String> {
    use layerboot::bootimage::{Format, Package};
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages");
    std::fs::create_dir_all(dir).unwrap();
    let mut candidates = Vec::new();
    for e in std::fs::read_dir(&shipped).unwrap().flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let def = layerboot::bootimage::definition::parse(name, &text).unwrap();
        let plainness = (
            def.package != Package::None,
            !matches!(def.format, Format::Raw | Format::Qcow2),
        );
        let layout = serde_json::to_string(&(def.sector_size, &def.partitions)).unwrap();
        candidates.push((plainness, name.to_string(), layout, text));
    }
    candidates.sort();
    let mut layouts = std::collections::BTreeSet::new();
    let mut names = Vec::new();
    for (_, name, layout, text) in candidates {
        if !layouts.insert(layout) {
            continue;
        }
        let plain: String = text
            .lines()
            .filter(|l| !l.starts_with("compression-level"))
            .map(|l| {
                if l.starts_with("compression ") || l.starts_with("compression=") {
                    "compression = \"none\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(plain, text, "{name}: no compression line to turn off");
        std::fs::write(dir.join(format!("{name}.toml")), plain + "\n").unwrap();
        names.push(name);
    }
    names.sort();
    assert!(
        names.len() >= 2,
        "shipped layouts: {names:?} (expected the 512-byte and the 4096-byte one at least)"
    );
    names
}

/// `(used, size)` of the root from `layerboot disk -v`'s log.
fn root_usage(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("root filesystem: "))?;
    let rest = line.split("root filesystem: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let used = words.next()?.parse().ok()?;
    let size = words.nth(3)?.parse().ok()?;
    Some((used, size))
}

#[test]
fn auto_sized_root_holds_for_every_shipped_definition() {
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let tight = tight_image(tmp.path());
    let selinux = layerboot_testkit::selinux_image::selinux_image()
        .expect("SELinux fixture image (needs root, semodule)");
    let images = [
        ("selinux", selinux.oci_ref()),
        ("tight", format!("oci:{}:{TAG}", tight.display())),
    ];
    let defs = tmp.path().join("defs");
    let names = uncompressed_definitions(&defs);
    let bin = std::env::var_os("LAYERBOOT_AUTOSIZE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_layerboot")));
    let mut failures = Vec::new();
    for round in 0..rounds() {
        for (name, (kind, image)) in names
            .iter()
            .flat_map(|n| images.iter().map(move |i| (n, i)))
        {
            let out_dir = tmp.path().join(format!("out-{name}-{kind}-{round}"));
            std::fs::create_dir(&out_dir).unwrap();
            let started = std::time::Instant::now();
            let o = Command::new(&bin)
                .args(["disk", "-v", "-q", "-p", name, "--bootimages"])
                .arg(&defs)
                .arg("-o")
                .arg(out_dir.join("disk.img"))
                .arg(image)
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&o.stderr);
            let secs = started.elapsed().as_secs();
            match root_usage(&log) {
                Some((used, size)) if o.status.success() => eprintln!(
                    "{name} {kind} round {round}: ok in {secs} s, root {size} bytes, {used} used, slack {} MiB ({:.1}%)",
                    (size - used) >> 20,
                    (size - used) as f64 * 100.0 / size as f64
                ),
                _ => {
                    // The helper's log is folded into the error line: its last part says why.
                    let why = log
                        .lines()
                        .rfind(|l| l.starts_with("error: "))
                        .and_then(|l| l.rsplit(" | ").next())
                        .unwrap_or("no error line");
                    eprintln!("{name} {kind} round {round}: FAILED in {secs} s: {why}");
                    failures.push(format!("{name} {kind} round {round}: {why}"));
                }
            }
            std::fs::remove_dir_all(&out_dir).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "auto-sized builds failed: {failures:#?}"
    );
}
