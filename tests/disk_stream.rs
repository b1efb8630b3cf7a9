//! The stream metadata `layerboot disk` writes, read by the real coreos-installer 0.27:
//! a metal build of the example image with `--base-url` pointing at a loopback HTTP server
//! that serves the output directory, then `coreos-installer download --stream-base-url
//! --insecure`. coreos-installer verifies nothing but a GPG signature (which layerboot's
//! images do not have), so the test checks the downloaded bytes against the stream's
//! `sha256` itself, and shows that check rejects a stream whose sha256 was tampered with.
//! A second build, of an RHCOS-like variant of the CoreOS fixture with the shipped `metal`
//! definition, takes gzip from the image (as RHCOS ships `raw.gz`) and is downloaded the
//! same way. Needs root, like `layerboot disk`.

mod iso_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerboot_testkit::http::FileServer;
use layerboot_testkit::layered_image::layered_image;
use serde_json::Value;

const STREAM: &str = "layered";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `coreos-installer download` of `-p metal -f FORMAT` from the stream `stream` at `base`
/// into `dir` (created), with `--insecure` unless `secure`.
fn download(stream: &str, base: &str, format: &str, dir: &Path, secure: bool) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = Command::new(iso_support::coreos_installer());
    c.args(["download", "--stream", stream, "--stream-base-url", base]);
    c.args(["-p", "metal", "-f", format, "-C"]).arg(dir);
    if !secure {
        c.arg("--insecure");
    }
    c.output().expect("running coreos-installer download")
}

/// The `disk` artifact of `metal` / `format` in a stream.
fn metal<'a>(stream: &'a Value, format: &str) -> &'a Value {
    &stream["architectures"]["x86_64"]["artifacts"]["metal"]["formats"][format]["disk"]
}

/// The check coreos-installer does not make: the one file downloaded into `dir` has the
/// stream's `sha256` for `metal`/`format`. Returns that file.
fn verify_download(stream: &Value, format: &str, dir: &Path) -> Result<PathBuf, String> {
    let want = metal(stream, format)["sha256"]
        .as_str()
        .ok_or(format!("no sha256 for metal {format}"))?;
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .collect();
    let [file] = &files[..] else {
        return Err(format!(
            "expected one file in {}, found {files:?}",
            dir.display()
        ));
    };
    let (got, _) = layerboot::io::sha256_file(file).map_err(|e| format!("{e:#}"))?;
    if got != want {
        return Err(format!(
            "{}: sha256 {got}, stream says {want}",
            file.display()
        ));
    }
    Ok(file.clone())
}

#[test]
fn coreos_installer_downloads_what_the_stream_describes() {
    let image = layered_image().expect("example layered image");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let server = FileServer::start(&served).unwrap();
    let base = server.url();

    // metal at xz preset 0: the raw.xz format `coreos-installer install --stream` picks,
    // at the fastest preset (the test is about the metadata, not the ratio).
    let defs = dir.path().join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    let metal = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bootimages/metal.toml"),
    )
    .unwrap();
    let fast: String = metal
        .lines()
        .map(|l| {
            if l.starts_with("compression") {
                "compression = \"xz\"\ncompression-level = 0\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(fast.contains("compression-level = 0"), "{fast}");
    std::fs::write(defs.join("metal-fast.toml"), fast).unwrap();
    // coreos-installer fetches `<base>/<stream>.json`.
    let stream_path = served.join(format!("{STREAM}.json"));
    let out = served.join("layered-metal.x86_64.raw.xz");
    let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["disk", &image.oci_ref(), "--bootimages"])
        .arg(&defs)
        .args([
            "-p",
            "metal-fast",
            "--stream-name",
            STREAM,
            "--base-url",
            &base,
        ])
        .arg("--stream-metadata")
        .arg(&stream_path)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&stream_path).unwrap();
    let stream: Value = serde_json::from_str(&text).unwrap();
    let disk =
        &stream["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.xz"]["disk"];
    let location = format!("{base}layered-metal.x86_64.raw.xz");
    assert_eq!(disk["location"], location);
    assert_eq!(disk["signature"], format!("{location}.sig"));
    // Every key of stream-metadata-go's Artifact, as strings.
    for key in ["location", "signature", "sha256", "uncompressed-sha256"] {
        assert!(disk[key].is_string(), "{key} in {disk}");
    }

    // The real coreos-installer, through the stream: it fetches the stream and the
    // artifact from our server, tolerates the missing signature with --insecure only.
    let good = dir.path().join("good");
    let o = download(STREAM, &base, "raw.xz", &good, false);
    assert!(
        o.status.success(),
        "coreos-installer download: {}",
        stderr(&o)
    );
    let file = verify_download(&stream, "raw.xz", &good).unwrap();
    assert_eq!(file.file_name().unwrap(), "layered-metal.x86_64.raw.xz");
    let requests: Vec<String> = server.requests().into_iter().map(|(p, _)| p).collect();
    for want in [
        "/layered.json",
        "/layered-metal.x86_64.raw.xz",
        "/layered-metal.x86_64.raw.xz.sig",
    ] {
        assert!(
            requests.iter().any(|r| r == want),
            "{want} not in {requests:?}"
        );
    }
    std::fs::remove_dir_all(&good).unwrap();

    // Without --insecure it stops at the missing signature.
    let o = download(STREAM, &base, "raw.xz", &dir.path().join("secure"), true);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));

    // The sha256 check can fail: the same artifact under a stream whose sha256 was changed.
    let mut tampered = stream.clone();
    tampered["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.xz"]["disk"]
        ["sha256"] = Value::from("0".repeat(64));
    std::fs::write(
        served.join("tampered.json"),
        serde_json::to_vec(&tampered).unwrap(),
    )
    .unwrap();
    let bad = dir.path().join("tampered");
    let o = download("tampered", &base, "raw.xz", &bad, false);
    assert!(
        o.status.success(),
        "coreos-installer download: {}",
        stderr(&o)
    );
    let e = verify_download(&tampered, "raw.xz", &bad).unwrap_err();
    assert!(e.contains("stream says 0000"), "{e}");
    std::fs::remove_dir_all(&bad).unwrap();

    // What a build without --base-url writes (a bare file name) is refused by
    // coreos-installer: why the README asks for --base-url.
    let mut bare = stream.clone();
    let disk =
        &mut bare["architectures"]["x86_64"]["artifacts"]["metal"]["formats"]["raw.xz"]["disk"];
    disk["location"] = Value::from("layered-metal.x86_64.raw.xz");
    disk["signature"] = Value::from("layered-metal.x86_64.raw.xz.sig");
    std::fs::write(served.join("bare.json"), serde_json::to_vec(&bare).unwrap()).unwrap();
    let o = download("bare", &base, "raw.xz", &dir.path().join("bare"), false);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("parsing artifact URL from stream metadata"),
        "{}",
        stderr(&o)
    );
    drop(server);
}

/// An RHCOS-like image (the CoreOS fixture with RHCOS's image.json, which names no
/// compressor, and `com.coreos.osname=rhcos`) built with the shipped `metal` definition:
/// gzip from the image, `raw.gz` in the stream and the default file name, and
/// coreos-installer downloads it; the artifact is one gzip member (coreos-installer's
/// decompressor reads only the first) whose content has the stream's uncompressed-sha256.
#[test]
fn rhcos_like_image_ships_metal_raw_gz() {
    use layerboot::disk::coreos::{IMAGE_JSON, OSNAME_LABEL};
    use layerboot_testkit::coreos_image::{coreos_image, COREOS_TAG};
    use layerboot_testkit::layered_image::{append_layer, LayerEntry};
    let fixture = coreos_image().expect("CoreOS-like fixture");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // Hard links into the fixture cache: append_layer adds new blobs and replaces
    // index.json by rename, so the cached fixture is never written.
    let oci = dir.path().join("oci");
    let cp = Command::new("cp")
        .arg("-al")
        .arg(&fixture.oci_dir)
        .arg(&oci)
        .status()
        .unwrap();
    assert!(cp.success());
    append_layer(
        &oci,
        COREOS_TAG,
        "rhcos",
        &[LayerEntry::File {
            path: IMAGE_JSON.to_string(),
            mode: 0o644,
            content: br#"{"extra-kargs": ["mitigations=auto,nosmt"], "ostree-remote": "rhcos"}"#
                .to_vec(),
        }],
        "COPY image.json (RHCOS's: no compressor)",
        &[(OSNAME_LABEL, "rhcos")],
    )
    .unwrap();

    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let server = FileServer::start(&served).unwrap();
    let base = server.url();
    // No -o: the default name's suffix comes from the image too.
    let o = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .current_dir(&served)
        .args([
            "disk",
            &format!("oci:{}:rhcos", oci.display()),
            "-p",
            "metal",
        ])
        .args(["--stream-name", "rhcos", "--base-url", &base])
        .args(["--stream-metadata", "rhcos.json", "-v", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("raw.gz compression (as the image says: label com.coreos.osname=rhcos)"),
        "{}",
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["stream_format"], "raw.gz");
    let out = PathBuf::from(report["output"].as_str().unwrap());
    let name = out.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with("-metal.x86_64.raw.gz"), "{name}");
    let stream: Value =
        serde_json::from_slice(&std::fs::read(served.join("rhcos.json")).unwrap()).unwrap();
    let disk = metal(&stream, "raw.gz");
    assert_eq!(disk["location"], format!("{base}{name}"));

    let got = dir.path().join("got");
    let o = download("rhcos", &base, "raw.gz", &got, false);
    assert!(
        o.status.success(),
        "coreos-installer download: {}",
        stderr(&o)
    );
    let file = verify_download(&stream, "raw.gz", &got).unwrap();
    drop(server);
    std::fs::remove_dir_all(&served).unwrap();
    // flate2's GzDecoder stops after the first member, as coreos-installer's does.
    let mut gz =
        flate2::read::GzDecoder::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    let (usha, usize_) = layerboot::io::sha256_reader(&mut gz).unwrap();
    assert_eq!(disk["uncompressed-sha256"], usha);
    assert_eq!(report["uncompressed_size"], usize_);
}
