//! Entry points for the fuzz targets in `fuzz/` (and their regression tests in
//! `tests/fuzz_regressions.rs`): one function per parser of untrusted input, taking raw
//! bytes and driving the parser the way the commands do. Each must return normally for
//! every input; a panic, abort or hang is a bug. Not a stable API.

use std::io::Cursor;
use std::str::FromStr;

use crate::oci::reference::{Digest, ImageRef};

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Image references (`IMAGE` and `--to` arguments, `osImageURL`s read back): parse, use,
/// and print. A registry reference must parse back to itself from its printed form,
/// which is what every manifest and pull spec we write relies on.
pub fn imageref(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let _ = Digest::from_str(s);
    let _ = crate::registry::pull::Destination::from_str(s);
    let Ok(r) = ImageRef::from_str(s) else { return };
    let _ = r.is_digest_pinned();
    if let ImageRef::Registry(reg) = &r {
        let _ = reg.name();
        let _ = reg.tag_or_latest();
        let _ = reg.to_oci_reference();
        let _ = crate::registry::auth::candidate_keys(reg);
        let printed = reg.to_string();
        match ImageRef::from_str(&printed) {
            Ok(ImageRef::Registry(again)) => assert_eq!(
                again.to_string(),
                printed,
                "{s:?} prints as {printed:?}, which reads back differently"
            ),
            other => panic!("{s:?} prints as {printed:?}, which reads back as {other:?}"),
        }
    }
}

/// Authfiles (`--authfile`, `$REGISTRY_AUTH_FILE`, `~/.docker/config.json`, pull
/// secrets): parse, look up credentials for every key, write back and re-read.
pub fn authfile(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let Ok(file) = crate::registry::auth::AuthFile::parse(s) else {
        return;
    };
    for (key, entry) in &file.auths {
        let _ = crate::registry::auth::normalize_key(key);
        let _ = entry.credentials(key);
    }
    if let Ok(ImageRef::Registry(r)) = ImageRef::from_str("quay.io/acme/image:tag") {
        let _ = file.credentials_for(&r);
    }
    let mut merged = crate::registry::auth::AuthFile::default();
    merged.merge(&file);
    crate::registry::auth::AuthFile::parse(&merged.to_json())
        .expect("an authfile we wrote must parse");
}

/// OCI/Docker manifests, indexes and image configs, as a registry or layout serves them.
pub fn oci_manifest(data: &[u8]) {
    use crate::oci::manifest::{select_platform, ImageConfig, Manifest};
    for content_type in [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    ] {
        match Manifest::parse(data, content_type) {
            Ok(Manifest::Index(index)) => {
                let _ = select_platform(&index, "linux", "amd64");
                let _ = select_platform(&index, "linux", "arm64");
            }
            Ok(m) => {
                let _ = format!("{m:?}");
            }
            Err(_) => {}
        }
    }
    if let Ok(config) = ImageConfig::parse(data) {
        let _ = config.labels();
        let _ = config.label("ostree.bootable");
        let _ = config.platform();
    }
}

/// The ostree importer's GVariant parsers (xattrs, dirtree, dirmeta, commit,
/// commitmeta), on the bytes of one object; the first byte picks the kind.
pub fn ostree_gvariant(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let kind = ["xattrs", "dirtree", "dirmeta", "commit", "commitmeta"][usize::from(kind) % 5];
    crate::disk::ostree_import::fuzz_object(kind, body);
}

/// A small fixed bare repo per process, re-made now and then so a long run does not fill
/// the disk with the objects of every input.
fn scratch_repo() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let dir = DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("layerboot-fuzz-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("creating the fuzz scratch directory")
    });
    let repo = dir.path().join("repo");
    if RUNS.fetch_add(1, Ordering::Relaxed).is_multiple_of(2000) || !repo.join("objects").is_dir() {
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).expect("creating the scratch repo directory");
        let r = ostree_ext::ostree::Repo::new_for_path(&repo);
        r.create(
            ostree_ext::ostree::RepoMode::Bare,
            ostree_ext::gio::Cancellable::NONE,
        )
        .expect("creating the scratch ostree repo");
    }
    repo
}

/// The ostree layer importer (`disk`'s fast path) on one uncompressed layer tar, both as
/// a commit layer and as an object-set layer, into a real bare repo. The digest is the
/// blob's own, so a well-formed input gets as far as writing its commit and ref.
pub fn ostree_tar(data: &[u8]) {
    use crate::disk::ostree_import::{import_layer, LayerKind};
    use sha2::{Digest as _, Sha256};
    let repo = scratch_repo();
    let blob = repo.join("layer.tar");
    std::fs::write(&blob, data).expect("writing the fuzz layer blob");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    for kind in [LayerKind::Commit, LayerKind::ObjectSet] {
        let _ = import_layer(
            &repo,
            &blob,
            "application/vnd.oci.image.layer.v1.tar",
            &digest,
            kind,
        );
    }
}

/// ISO 9660 and the live ISO's embed areas, read as `iso show` reads them: the volume,
/// `/coreos/igninfo.json`, `/coreos/kargs.json`, `/coreos/features.json`, the Ignition
/// area's payload and the kernel-argument areas. The input is the image from sector 16
/// (the volume descriptors) on; the 32 KiB system area before it is zeros.
pub fn iso9660(data: &[u8]) {
    use crate::iso::embed::Layout;
    use crate::iso::iso9660::IsoFs;
    use crate::iso::{LiveIso, Report, State};
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    let Ok(mut iso) = IsoFs::new(Cursor::new(image)) else {
        return;
    };
    let root = iso.volume().root.clone();
    if let Ok(entries) = iso.list(&root) {
        for e in entries.iter().take(64) {
            if e.is_dir {
                let _ = iso.list(e);
            } else {
                let _ = iso.read(e, 1 << 20);
            }
        }
    }
    for path in [
        "coreos/igninfo.json",
        "images/ignition.img",
        "COREOS/KARGS.JSON",
    ] {
        let _ = iso.lookup(path);
    }
    let Ok(layout) = Layout::locate(&mut iso, "fuzz.iso") else {
        return;
    };
    let Ok(state) = State::read(&mut iso, &layout) else {
        return;
    };
    let live = LiveIso { layout, state };
    if let Ok(report) = Report::new(&live) {
        let _ = report.render();
    }
}

/// An Ignition embed area's payload (xz/gzip/plain newc archives, zero padding) and the
/// live config inside it, as `iso show` and `iso customize` read them; and one kernel
/// argument area.
pub fn iso_payload(data: &[u8]) {
    use crate::iso::embed::{edit_kargs, parse_kargs_area};
    use crate::iso::payload::Payload;
    if let Ok(p) = Payload::from_area_bytes(data) {
        for (_, contents) in p.members() {
            let _ = crate::iso::live::carried_files(contents);
        }
        let _ = p.network_keyfiles();
        let _ = p.to_cpio();
    }
    let _ = crate::iso::live::carried_files(data);
    if let Ok(kargs) = parse_kargs_area(data, '#', '\n') {
        let _ = edit_kargs(&kargs, &["a=b".into()], &["quiet".into()]);
    }
}

/// Ignition configs we read: `--ignition`/`--dest-ignition` inputs, `--from` pointer
/// configs, rebase merge configs, data URLs.
pub fn ignition(data: &[u8]) {
    use crate::ignition::{self as ign, SpecVersion};
    let named = crate::iso::Named::new("fuzz.ign", data.to_vec());
    let _ = crate::iso::live::parse_ignition(&named);
    let _ = ign::check_roundtrip(data);
    let _ = ign::pointer::read_existing(data, "fuzz.ign");
    let _ = ign::rebase::check_merge_config(data, "fuzz.ign", SpecVersion::V3_2);
    if let Some(s) = text(data) {
        let _ = ign::decode_data_url(s);
        let _ = crate::iso::live::decode_data_url(s, None);
        let _ = crate::iso::live::decode_data_url(s, Some("gzip"));
        let _ = ign::rebase::parse_ssh_keys(s, "fuzz.pub");
    }
}

/// `install-config.yaml` (patched in place) and CoreOS stream metadata (`--stream`).
pub fn install_config(data: &[u8]) {
    use crate::openshift::installconfig::{InstallConfig, Mirror, Patch, Stream};
    if let Ok(stream) = Stream::parse(data, "fuzz.json") {
        let _ = format!("{stream:?}");
    }
    let Some(s) = text(data) else { return };
    let _ = Mirror::from_str(s);
    let Ok(mut config) = InstallConfig::parse(s, "install-config.yaml") else {
        return;
    };
    let _ = (
        config.cluster_name(),
        config.base_domain(),
        config.platform(),
        config.baremetal_api_vip(),
        config.pull_secret(),
    );
    let patch = Patch {
        pull_secret: Some(r#"{"auths":{"quay.io":{"auth":"YTpi"}}}"#.into()),
        trust_bundle: None,
        mirrors: vec![Mirror {
            source: "quay.io/acme".into(),
            mirror: "mirror.example.com/acme".into(),
        }],
        cluster_os_image: Some("https://example.com/disk.raw.xz?sha256=00".into()),
        bootstrap_os_image: None,
        ..Default::default()
    };
    if config.apply(&patch).is_ok() {
        if let Ok(yaml) = config.to_yaml() {
            InstallConfig::parse(&yaml, "patched").expect("a config we patched must parse");
        }
    }
}

/// Boot image definitions (`bootimages/*.toml`, `--bootimages DIR`), parsed and resolved
/// into a disk layout plan as `disk` does.
pub fn bootimage(data: &[u8]) {
    use crate::bootimage::definition::{parse, parse_size};
    use crate::bootimage::plan::{resolve, ContentSizes, PlanOptions};
    let Some(s) = text(data) else { return };
    let _ = parse_size(s);
    let Ok(def) = parse("fuzz.toml", s) else {
        return;
    };
    for size in [None, Some(8u64 << 30)] {
        let opts = PlanOptions {
            size,
            extra_kargs: vec!["console=ttyS0".into()],
            content: ContentSizes {
                esp: 1 << 20,
                boot: 64 << 20,
                root: 1 << 30,
            },
            coreos: None,
        };
        let _ = resolve("fuzz", &def, &opts);
    }
}

/// Every target by name, for the harness and the regression tests.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("imageref", imageref),
    ("authfile", authfile),
    ("oci_manifest", oci_manifest),
    ("ostree_gvariant", ostree_gvariant),
    ("ostree_tar", ostree_tar),
    ("iso9660", iso9660),
    ("iso_payload", iso_payload),
    ("ignition", ignition),
    ("install_config", install_config),
    ("bootimage", bootimage),
];
