//! The parallel verified importer (`layerboot::disk::ostree_import`) against real validators:
//! `ostree fsck` re-hashes every object it wrote; the objects, their ownership, modes,
//! mtimes and xattrs equal what ostree-ext's own pull of the same image leaves in a bare
//! repo; the layer ref resolves to the same commit; content checksums agree with the ones
//! `ostree commit` computes; a tampered layer is refused naming the object. Needs root
//! (object ownership, like the deploy helper) and the cached example layered image.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use layerboot::disk::ostree_import::{self, Outcome};
use layerboot_testkit::layered_image::{layered_image, LayeredImage, BASE_TAG, LAYERED_TAG};
use ostree_ext::oci_spec::image::ImageManifest;

fn image() -> &'static LayeredImage {
    static I: std::sync::OnceLock<LayeredImage> = std::sync::OnceLock::new();
    I.get_or_init(|| {
        layered_image()
            .expect("example layered image (needs root, debootstrap, network to the Debian mirror)")
    })
}

fn require_root_and_ostree() {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "these tests write objects owned by other users: run them as root"
    );
    layerboot::cmd::require("ostree", "ostree").expect("the ostree CLI (apt-get install ostree)");
}

fn ostree(args: &[&str]) -> String {
    let out = layerboot::cmd::run(Command::new("ostree").args(args))
        .unwrap_or_else(|e| panic!("ostree {args:?}: {e:#}"));
    String::from_utf8(out.stdout).unwrap()
}

/// A scratch directory on the same filesystem as the staging sysroots.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lb-ostree-import-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn bare_repo(dir: &Path, name: &str) -> PathBuf {
    let repo = dir.join(name);
    ostree(&["init", "--mode=bare", &format!("--repo={}", repo.display())]);
    repo
}

fn commit_layer(img: &LayeredImage, tag: &str) -> (String, String, PathBuf) {
    let (l, components) = ostree_import::ostree_layers(&img.oci_dir, tag)
        .unwrap()
        .unwrap();
    assert!(components.is_empty(), "the example image is not chunked");
    (l.digest, l.media_type, l.path)
}

/// Everything observable about an object file: type and mode, owner, size, mtime (content
/// objects only; metadata objects carry their write time), xattrs, and a content digest.
fn object_facts(path: &Path, with_mtime: bool) -> String {
    let md = fs::symlink_metadata(path).unwrap();
    let content = if md.file_type().is_symlink() {
        fs::read_link(path).unwrap().to_string_lossy().into_owned()
    } else {
        layerboot::io::sha256_file(path).unwrap().0
    };
    let mut xattrs: Vec<String> = xattr_names(path);
    xattrs.sort();
    // libostree sets mtime 0 on regular content objects (checkouts hard-link them); symlinks
    // keep their creation time, and libostree 2022.7 leaves empty objects at their write time
    // too (ostree-ext checks out zero-sized files as copies). Those are not compared.
    let mtime = if with_mtime && md.file_type().is_file() && md.len() > 0 {
        md.mtime()
    } else {
        -1
    };
    format!(
        "mode={:o} uid={} gid={} size={} mtime={mtime} xattrs={xattrs:?} content={content}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.len()
    )
}

fn xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut buf[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", path.display()));
    buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `objects/xx/name` → facts, for every object of a repo.
fn objects(repo: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in fs::read_dir(repo.join("objects")).unwrap().flatten() {
        for o in fs::read_dir(d.path()).unwrap().flatten() {
            let name = format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                o.file_name().to_string_lossy()
            );
            out.insert(
                name.clone(),
                object_facts(&o.path(), name.ends_with(".file")),
            );
        }
    }
    out
}

fn resolve(repo: &Path, r: &str) -> String {
    ostree(&["rev-parse", &format!("--repo={}", repo.display()), r])
        .trim()
        .to_string()
}

/// Fill `repo` the way a real pull does: ostree-ext's container importer (through skopeo).
fn pull_with_ostree_ext(repo: &Path, oci_dir: &Path, tag: &str) {
    use ostree_ext::container::store::{ImageImporter, PrepareResult};
    use ostree_ext::container::OstreeImageReference;
    let r = ostree_ext::ostree::Repo::new_for_path(repo);
    r.open(ostree_ext::gio::Cancellable::NONE).unwrap();
    let imgref = OstreeImageReference::try_from(
        format!("ostree-unverified-image:oci:{}:{tag}", oci_dir.display()).as_str(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut imp = ImageImporter::new(&r, &imgref, Default::default())
            .await
            .expect("opening the image with ostree-ext");
        let prep = match imp.prepare().await.expect("ostree-ext prepare") {
            PrepareResult::Ready(p) => p,
            PrepareResult::AlreadyPresent(_) => panic!("fresh repo already has the image"),
        };
        imp.import(prep).await.expect("ostree-ext import");
    });
}

#[test]
fn import_equals_ostree_ext_pull_and_passes_fsck() {
    require_root_and_ostree();
    let img = image();
    let dir = scratch();
    let (digest, _, _) = commit_layer(img, LAYERED_TAG);

    let ours = bare_repo(dir.path(), "ours");
    let stats = match ostree_import::prefill_from_oci(&ours, &img.oci_dir, LAYERED_TAG).unwrap() {
        Outcome::Imported(mut s) if s.len() == 1 => s.remove(0),
        o => panic!("expected one layer imported into a bare repo: {o:?}"),
    };
    eprintln!("{stats:?}");
    assert_eq!(stats.layer_digest, digest);
    assert!(
        stats.content_objects > 5000 && stats.metadata_objects > 500,
        "{stats:?}"
    );
    // A real validator: fsck re-reads and re-hashes every object (content with its
    // ownership, mode and xattrs) and walks the commit.
    let fsck = ostree(&["fsck", &format!("--repo={}", ours.display())]);
    assert!(
        fsck.contains("Validating refs") || fsck.contains("objects"),
        "{fsck}"
    );
    let ref_name = ostree_import::layer_ref(&digest).unwrap();
    assert_eq!(resolve(&ours, &ref_name), stats.commit);
    // Nothing left at temporary names.
    assert!(
        objects(&ours).keys().all(|k| !k.contains(".tmp")),
        "temporary files left in objects/"
    );
    // A second pre-fill sees the layer present and leaves it alone.
    assert!(
        matches!(ostree_import::prefill_from_oci(&ours, &img.oci_dir, LAYERED_TAG).unwrap(), Outcome::Skipped(w) if w.contains("already"))
    );

    // The reference: ostree-ext's own pull of the base image into another bare repo.
    let theirs = bare_repo(dir.path(), "theirs");
    pull_with_ostree_ext(&theirs, &img.oci_dir, BASE_TAG);
    assert_eq!(
        resolve(&theirs, &ref_name),
        stats.commit,
        "ostree-ext's layer ref points at another commit"
    );
    assert_same_objects(&ours, &theirs);
    let ls = |repo: &Path| {
        ostree(&[
            "ls",
            &format!("--repo={}", repo.display()),
            "-R",
            "-X",
            "-C",
            &stats.commit,
        ])
    };
    assert_eq!(ls(&ours), ls(&theirs));
}

/// Every object we wrote is in ostree-ext's repo with the same facts; ostree-ext has no
/// content object we lack (it adds only its merge commit and, if the tree changed, metadata).
fn assert_same_objects(ours: &Path, theirs: &Path) {
    let (a, b) = (objects(ours), objects(theirs));
    for (name, facts) in &a {
        assert_eq!(
            Some(facts),
            b.get(name),
            "object {name}: ours (left) differs from ostree-ext's (right)"
        );
    }
    let extra: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        extra.iter().all(|k| !k.ends_with(".file")),
        "content objects ostree-ext has and we lack: {extra:?}"
    );
}

/// A chunked variant of the example base image, as RHCOS is built: ostree-ext's encapsulate
/// with content metadata (here: objects grouped by their top three path components, as if
/// they were packages) and a layer limit, so content sits in component layers and the
/// commit layer keeps the metadata and the rest. Cached by the base image's digest.
fn chunked_image() -> PathBuf {
    use ostree_ext::chunking::ObjectMetaSized;
    use ostree_ext::container::{Config, ExportOpts, ImageReference, Transport};
    use ostree_ext::objectsource::{ObjectMeta, ObjectSourceMeta};
    let img = image();
    let parts: [&[u8]; 2] = [
        b"ostree-import chunked fixture v1",
        img.base_digest.as_bytes(),
    ];
    let dir = layerboot_testkit::cache::cached_fixture("ostree-chunked", &parts, |staging| {
        let repo = bare_repo(staging, "repo");
        let commit = match ostree_import::prefill_from_oci(&repo, &img.oci_dir, BASE_TAG)? {
            Outcome::Imported(s) => s.last().unwrap().commit.clone(),
            o => anyhow::bail!("importing the base: {o:?}"),
        };
        let listing = ostree(&[
            "ls",
            &format!("--repo={}", repo.display()),
            "-R",
            "-C",
            &commit,
        ]);
        let mut meta = ObjectMeta::default();
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(path) = f.iter().find(|s| s.starts_with('/')) else {
                continue;
            };
            if f[0].starts_with('d') {
                continue;
            }
            let id: std::rc::Rc<str> = path.split('/').take(4).collect::<Vec<_>>().join("/").into();
            meta.set.insert(ObjectSourceMeta {
                identifier: id.clone(),
                name: id.clone(),
                srcid: id.clone(),
                change_time_offset: 1,
                change_frequency: 1,
            });
            meta.map.insert(f[4].to_string(), id);
        }
        let r = ostree_ext::ostree::Repo::new_for_path(&repo);
        r.open(ostree_ext::gio::Cancellable::NONE)?;
        let sized = ObjectMetaSized::compute_sizes(&r, meta)?;
        let mut opts = ExportOpts::default();
        opts.max_layers = std::num::NonZeroU32::new(8);
        opts.contentmeta = Some(&sized);
        let dest = ImageReference {
            transport: Transport::OciDir,
            name: format!("{}:chunked", staging.join("oci").display()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(ostree_ext::container::encapsulate(
            &r,
            &commit,
            &Config::default(),
            Some(opts),
            &dest,
        ))?;
        drop(r);
        fs::remove_dir_all(&repo)?;
        Ok(())
    })
    .expect("building the chunked example image");
    dir.join("oci")
}

/// Chunked images: the component layers (object sets) and the commit layer, each with the
/// ref ostree-ext would write (for component layers, the synthetic commit over the object
/// set must be byte-identical to ostree-ext's for the refs to agree).
#[test]
fn chunked_image_layers_equal_ostree_ext_pull() {
    require_root_and_ostree();
    let oci = chunked_image();
    let (commit_layer, components) = ostree_import::ostree_layers(&oci, "chunked")
        .unwrap()
        .unwrap();
    assert!(
        components.len() >= 3,
        "the fixture is not chunked: {components:?}"
    );
    let dir = scratch();
    let ours = bare_repo(dir.path(), "ours");
    let done = match ostree_import::prefill_from_oci(&ours, &oci, "chunked").unwrap() {
        Outcome::Imported(s) => s,
        o => panic!("{o:?}"),
    };
    assert_eq!(done.len(), components.len() + 1);
    assert_eq!(done.last().unwrap().layer_digest, commit_layer.digest);
    // Each component layer: content objects only, recorded by a dirmeta, a dirtree and a commit.
    assert!(
        done[..components.len()]
            .iter()
            .all(|s| s.metadata_objects == 3),
        "{done:?}"
    );
    assert!(
        done[..components.len()]
            .iter()
            .filter(|s| s.content_objects > 0)
            .count()
            >= 3,
        "{done:?}"
    );
    ostree(&["fsck", &format!("--repo={}", ours.display())]);

    let theirs = bare_repo(dir.path(), "theirs");
    pull_with_ostree_ext(&theirs, &oci, "chunked");
    for s in &done {
        assert_eq!(
            resolve(&theirs, &s.ref_name),
            s.commit,
            "layer {}",
            s.layer_digest
        );
        assert_eq!(
            resolve(&ours, &s.ref_name),
            s.commit,
            "layer {}",
            s.layer_digest
        );
    }
    assert_same_objects(&ours, &theirs);
}

/// `ostree commit` (libostree's own checksum code) and our header serialization agree on
/// every kind of content object: modes incl. setuid, owners, symlinks, xattrs.
#[test]
fn content_checksums_match_ostree_commit() {
    require_root_and_ostree();
    let dir = scratch();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let files: &[(&str, u32, u32, u32, &[u8], Option<(&str, &[u8])>)] = &[
        ("plain", 0, 0, 0o644, b"hello\n", None),
        ("setuid", 0, 0, 0o4755, b"#!/bin/sh\n", None),
        ("owned", 1000, 100, 0o600, b"secret", None),
        ("empty", 0, 0, 0o644, b"", None),
        ("big", 0, 0, 0o644, &[7u8; 300_000], None),
        (
            "xattr",
            0,
            0,
            0o644,
            b"x",
            Some(("user.layerboot", b"value")),
        ),
    ];
    for (name, uid, gid, mode, content, xattr) in files {
        let p = tree.join(name);
        fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(*uid), Some(*gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        if let Some((k, v)) = xattr {
            rustix::fs::setxattr(&p, *k, v, rustix::fs::XattrFlags::empty())
                .expect("setxattr (does /var/tmp support user xattrs?)");
        }
    }
    std::os::unix::fs::symlink("../lib/target", tree.join("link")).unwrap();
    let repo = bare_repo(dir.path(), "repo");
    let r = format!("--repo={}", repo.display());
    ostree(&[
        "commit",
        &r,
        "-b",
        "t",
        &format!("--tree=dir={}", tree.display()),
    ]);
    let listing = ostree(&["ls", &r, "-R", "-C", "t"]);
    // `-00644 0 0 6 <checksum> /plain`, symlinks `l00777 … /link -> ../lib/target`.
    let sums: BTreeMap<String, String> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.iter().find(|s| s.starts_with('/'))?;
            (!f[0].starts_with('d'))
                .then(|| (path.trim_start_matches('/').to_string(), f[4].to_string()))
        })
        .collect();
    let sum_of = |name: &str| {
        sums.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {listing}"))
    };
    use ostree_ext::glib::prelude::*;
    for (name, uid, gid, mode, content, xattr) in files {
        let xs: Vec<(Vec<u8>, Vec<u8>)> = xattr
            .iter()
            .map(|(k, v)| (format!("{k}\0").into_bytes(), v.to_vec()))
            .collect();
        let x = xs.to_variant();
        assert_eq!(
            ostree_import::regfile_checksum(*uid, *gid, *mode, x.data(), content),
            sum_of(name),
            "{name}"
        );
    }
    assert_eq!(
        ostree_import::symlink_checksum(0, 0, "../lib/target", &[]),
        sum_of("link")
    );
}

/// The first entries of the commit layer up to and including the first non-empty regular
/// content object, with `tamper` applied to that object's bytes; gzip-compressed.
fn layer_prefix(blob: &Path, tamper: impl Fn(&mut Vec<u8>)) -> (Vec<u8>, String) {
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(blob).unwrap()));
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut victim = None;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let mut h = e.header().clone();
        if h.entry_type().is_dir() {
            continue;
        }
        if let Some(target) = e.link_name().unwrap().map(|t| t.into_owned()) {
            out.append_link(&mut h, &path, &target).unwrap();
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let is_victim = path.to_string_lossy().ends_with(".file")
            && path.starts_with("sysroot/ostree/repo/objects")
            && data.len() > 16;
        if is_victim {
            tamper(&mut data);
            let p = path.to_string_lossy();
            let name = p.rsplit('/').next().unwrap().trim_end_matches(".file");
            let parent = p.rsplit('/').nth(1).unwrap();
            victim = Some(format!("{parent}{name}"));
        }
        out.append_data(&mut h, &path, &data[..]).unwrap();
        if is_victim {
            break;
        }
    }
    let bytes = out.into_inner().unwrap().finish().unwrap();
    (
        bytes,
        victim.expect("a regular content object in the layer"),
    )
}

#[test]
fn tampered_layer_is_refused_naming_the_object() {
    require_root_and_ostree();
    let img = image();
    let dir = scratch();
    let (_, media_type, blob) = commit_layer(img, BASE_TAG);
    let check = |bytes: &[u8], digest: &str, repo: &Path| {
        ostree_import::import_commit_layer(repo, &write(dir.path(), bytes), &media_type, digest)
    };
    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join(format!("blob-{}", bytes.len()));
        fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }
    let digest_of = |b: &[u8]| format!("sha256:{}", layerboot::io::sha256_reader(b).unwrap().0);

    // One byte of one object's content changed, the blob digest matching the new blob.
    let (bad, victim) = layer_prefix(&blob, |d| {
        let mid = d.len() / 2;
        d[mid] ^= 0x20
    });
    let repo = bare_repo(dir.path(), "tampered");
    let err = format!("{:#}", check(&bad, &digest_of(&bad), &repo).unwrap_err());
    assert!(
        err.contains(&format!("object {victim}.file is corrupt")),
        "{err}"
    );
    assert!(
        ostree(&["refs", &format!("--repo={}", repo.display())])
            .trim()
            .is_empty(),
        "a ref was written for a refused layer"
    );
    assert!(
        !repo
            .join("objects")
            .join(&victim[..2])
            .join(format!("{}.file", &victim[2..]))
            .exists(),
        "the corrupt object landed"
    );

    // The same prefix untampered imports; with a digest that is not the blob's, refused.
    let (good, _) = layer_prefix(&blob, |_| {});
    let repo = bare_repo(dir.path(), "good");
    let good_stats = ostree_import::import_commit_layer(
        &repo,
        &write(dir.path(), &good),
        &media_type,
        &digest_of(&good),
    )
    .expect("untampered prefix");
    let repo = bare_repo(dir.path(), "wrongdigest");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let err = format!("{:#}", check(&good, &wrong, &repo).unwrap_err());
    assert!(
        err.contains("does not match its digest") && err.contains(&wrong),
        "{err}"
    );
    assert!(ostree(&["refs", &format!("--repo={}", repo.display())])
        .trim()
        .is_empty());

    // The same layer as zstd and as plain tar, by media type.
    let tar_bytes = {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&good[..])
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let zst = zstd::encode_all(&tar_bytes[..], 3).unwrap();
    for (bytes, mt) in [
        (&zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
        (&tar_bytes, "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let repo = bare_repo(dir.path(), mt.rsplit(['.', '+']).next().unwrap());
        let s = ostree_import::import_commit_layer(
            &repo,
            &write(dir.path(), bytes),
            mt,
            &digest_of(bytes),
        )
        .unwrap_or_else(|e| panic!("{mt}: {e:#}"));
        assert_eq!(resolve(&repo, &s.ref_name), s.commit, "{mt}");
        assert_eq!(
            (s.commit, s.content_objects, s.metadata_objects),
            (
                good_stats.commit.clone(),
                good_stats.content_objects,
                good_stats.metadata_objects
            ),
            "{mt}"
        );
    }

    // A corrupt gzip stream names the layer.
    let mut cut = good.clone();
    cut.truncate(good.len() / 2);
    let err = format!(
        "{:#}",
        check(&cut, &digest_of(&cut), &bare_repo(dir.path(), "cut")).unwrap_err()
    );
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
}

/// Only bare repos are pre-filled; anything else is left to ostree-ext.
#[test]
fn non_bare_repo_and_foreign_sources_are_left_to_ostree_ext() {
    require_root_and_ostree();
    let img = image();
    let dir = scratch();
    let repo = dir.path().join("archive");
    ostree(&[
        "init",
        "--mode=archive",
        &format!("--repo={}", repo.display()),
    ]);
    assert!(
        matches!(ostree_import::prefill_from_oci(&repo, &img.oci_dir, LAYERED_TAG).unwrap(), Outcome::Skipped(w) if w.contains("archive"))
    );
    assert!(matches!(
        ostree_import::prefill_for_source(
            &repo,
            "ostree-unverified-registry:quay.io/x/y@sha256:00"
        )
        .unwrap(),
        Outcome::Skipped(_)
    ));
    // The manifest the importer picks: the first layer, the one ostree-ext calls the commit layer.
    let m = ImageManifest::from_file(
        img.oci_dir
            .join("blobs/sha256")
            .join(img.digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(
        commit_layer(img, LAYERED_TAG).0,
        m.layers()[0].digest().to_string()
    );
}
