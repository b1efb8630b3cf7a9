//! `layerboot install-config`: stream metadata and disk images into each platform's boot
//! image setting (clusterOSImage, bootstrapOSImage, amiID, osImage) or import commands,
//! printed pieces, in-place patching, and refusals that write nothing.

mod install_support;
use install_support::*;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

const IC: &str = "apiVersion: v1\nbaseDomain: example.com\nmetadata:\n  name: ocp\nplatform:\n  baremetal:\n    apiVIPs:\n    - 192.0.2.5\npullSecret: '{\"auths\":{}}'\n";

fn stream() -> String {
    repo()
        .join("tests/golden/stream-sample.json")
        .display()
        .to_string()
}

#[test]
fn stream_metadata_sets_both_os_images() {
    let dir = tempfile::tempdir().unwrap();
    let ic = dir.path().join("install-config.yaml");
    std::fs::write(&ic, IC).unwrap();
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--install-config",
        ic.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&std::fs::read(&ic).unwrap()).unwrap();
    assert_eq!(
        v["platform"]["baremetal"]["clusterOSImage"],
        format!(
            "https://images.example.com/layered/layered-metal.x86_64.raw.xz?sha256={}",
            "2".repeat(64)
        )
    );
    assert_eq!(
        v["platform"]["baremetal"]["bootstrapOSImage"],
        format!(
            "https://images.example.com/layered/layered-qemu.x86_64.qcow2.xz?sha256={}",
            "6".repeat(64)
        )
    );
    assert_eq!(v["platform"]["baremetal"]["apiVIPs"][0], "192.0.2.5");
    assert_eq!(
        std::fs::metadata(&ic).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A chosen format, printed as pieces.
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--stream-format",
        "4k.raw.xz",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    golden("install-config/pieces-stream-4k.yaml", &out.stdout);

    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "aarch64",
    ]);
    assert_refused(&out, "architecture 'aarch64'");
    let out = layerboot(&[
        "install-config",
        "--stream",
        &stream(),
        "--stream-arch",
        "x86_64",
        "--stream-platform",
        "openstack",
    ]);
    assert_refused(&out, "no 'openstack' artifact");
}

#[test]
fn disk_image_is_hashed_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let raw = vec![0x5au8; 3 << 20];
    let want = layerboot::io::sha256_reader(&raw[..]).unwrap().0;
    let disk = dir.path().join("layered-metal.raw.xz");
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&raw).unwrap();
    std::fs::write(&disk, xz.finish().unwrap()).unwrap();
    let url = "http://10.0.0.1:8080/layered-metal.raw.xz";
    let out = layerboot(&[
        "install-config",
        "--cluster-os-image",
        url,
        "--disk",
        disk.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["platform"]["baremetal"]["clusterOSImage"],
        format!("{url}?sha256={want}")
    );
}

#[test]
fn pieces_print_with_trust_bundle_and_mirrors() {
    let out = layerboot(&[
        "install-config",
        "--trust-bundle",
        TEST_CA,
        "--mirror",
        "quay.io/acme=mirror.example.com:5000/acme",
        "--mirror",
        "quay.io/acme=backup.example.com/acme",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    golden("install-config/pieces-trust-mirrors.yaml", &out.stdout);
    let out = layerboot(&["install-config"]);
    assert_refused(&out, "nothing to do");
}

fn platforms_stream() -> String {
    repo()
        .join("tests/golden/stream-platforms.json")
        .display()
        .to_string()
}

/// A minimal install-config for `platform` (with `extra` under the platform's key).
fn ic_for(platform: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nbaseDomain: example.com\nmetadata:\n  name: ocp\ncompute:\n- name: worker\n  replicas: 3\ncontrolPlane:\n  name: master\n  replicas: 3\nplatform:\n  {platform}:{extra}\npullSecret: '{{\"auths\":{{}}}}'\n"
    )
}

fn run_ok(args: &[&str]) -> (String, String) {
    let out = layerboot(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// Each platform gets the setting its installer code reads, with the sha256 that code
/// verifies (uncompressed for openstack's qcow2.gz, the file's for ova and plain qcow2),
/// or, where the installer takes an image id, nothing but the import commands.
#[test]
fn each_platform_gets_its_own_boot_image_setting() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "baremetal",
            "\n    apiVIPs:\n    - 192.0.2.5",
            &[],
            &[
                "only written to 99_baremetal-provisioning-config.yaml",
                "install_coreos",
                "bootstrapOSImage",
                "layerboot manifests",
                "layered live ISO",
            ],
        ),
        (
            "openstack",
            "\n    cloud: mycloud",
            &[],
            &["clusterOSImage (openstack qcow2.gz", "decompressed"],
        ),
        (
            "vsphere",
            "\n    apiVIPs:\n    - 192.0.2.5",
            &[],
            &[
                "clusterOSImage (vmware ova",
                "file's sha256",
                "--keep-boot-images",
            ],
        ),
        (
            "nutanix",
            "\n    apiVIPs:\n    - 192.0.2.5",
            &[],
            &["clusterOSImage (nutanix qcow2", "Prism Central downloads"],
        ),
        (
            "aws",
            "\n    region: us-east-1",
            &[],
            &[
                "aws ec2 import-snapshot",
                "aws ec2 register-image",
                "Format=vmdk",
                "gunzip -k layered-aws.x86_64.vmdk.gz",
                "--aws-ami",
                "sha256sum -c",
            ],
        ),
        (
            "aws",
            "\n    region: us-east-1",
            &["--aws-ami", "ami-0123456789abcdef0"],
            &["skips MachineSets with an image it does not know"],
        ),
        (
            "gcp",
            "\n    projectID: acme\n    region: us-central1",
            &[],
            &[
                "gcloud compute images create",
                "--source-uri gs://$BUCKET/layered-gcp.x86_64.tar.gz",
                "UEFI_COMPATIBLE",
            ],
        ),
        (
            "gcp",
            "\n    projectID: acme\n    region: us-central1",
            &["--gcp-image", "acme-images/rhcos-layered"],
            &["osImage: acme-images/rhcos-layered"],
        ),
        (
            "azure",
            "\n    region: eastus",
            &[],
            &[
                "no install-config field for a custom image",
                "az storage blob upload",
                "--type page",
                "az image create",
                "az sig image-version create",
                "xz -dk layered-azure.x86_64.vhd.xz",
            ],
        ),
    ];
    for (platform, extra, opts, stderr_has) in cases {
        let dir = tempfile::tempdir().unwrap();
        let ic = dir.path().join("install-config.yaml");
        std::fs::write(&ic, ic_for(platform, extra)).unwrap();
        let stream = platforms_stream();
        let mut args = vec!["install-config", "--install-config", ic.to_str().unwrap()];
        if opts.is_empty() {
            args.extend(["--stream", &stream]);
        }
        args.extend_from_slice(opts);
        let (_, stderr) = run_ok(&args);
        for want in *stderr_has {
            assert!(
                stderr.contains(want),
                "{platform} {opts:?}: no '{want}' in: {stderr}"
            );
        }
        assert!(stderr.contains("first boot:"), "{stderr}");
        let name = match opts.first() {
            Some(o) => format!("install-config/platform-{platform}{o}.yaml"),
            None => format!("install-config/platform-{platform}.yaml"),
        };
        golden(&name, &std::fs::read(&ic).unwrap());
    }
}

/// The same per-platform pieces, printed without a file (`--platform`).
#[test]
fn printed_pieces_follow_the_platform() {
    let stream = platforms_stream();
    let (stdout, _) = run_ok(&[
        "install-config",
        "--stream",
        &stream,
        "--stream-arch",
        "x86_64",
        "--platform",
        "openstack",
    ]);
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&stdout).unwrap();
    assert_eq!(
        v["platform"]["openstack"]["clusterOSImage"],
        format!(
            "https://images.example.com/layered/layered-openstack.x86_64.qcow2.gz?sha256={}",
            "8".repeat(64)
        )
    );
    assert!(v["platform"].get("baremetal").is_none(), "{stdout}");
    let (stdout, _) = run_ok(&[
        "install-config",
        "--platform",
        "gcp",
        "--gcp-image",
        "acme-images/rhcos-layered",
    ]);
    golden("install-config/pieces-gcp-image.yaml", stdout.as_bytes());
    // AWS without an AMI: nothing to paste, only the import commands.
    let (stdout, stderr) = run_ok(&[
        "install-config",
        "--stream",
        &stream,
        "--stream-arch",
        "x86_64",
        "--platform",
        "aws",
    ]);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("aws ec2 import-snapshot"), "{stderr}");
}

/// Wrong-platform input: one error line naming the culprit, and the file untouched.
#[test]
fn wrong_platform_input_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let only_metal = stream();
    let platforms = platforms_stream();
    let aarch64_stream = dir.path().join("aarch64.json");
    std::fs::write(
        &aarch64_stream,
        std::fs::read_to_string(&platforms)
            .unwrap()
            .replace("\"x86_64\": {", "\"aarch64\": {"),
    )
    .unwrap();
    let no_ova = dir.path().join("no-ova.json");
    std::fs::write(
        &no_ova,
        std::fs::read_to_string(&platforms)
            .unwrap()
            .replace("\"ova\": {", "\"vmdk\": {"),
    )
    .unwrap();
    let arm = "\n    cloud: c";
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        // an openstack install-config, but the stream has no openstack artifact
        (
            ic_for("openstack", "\n    cloud: c"),
            vec!["--stream", &only_metal],
            "no 'openstack' artifact for x86_64",
        ),
        // an artifact for another architecture only
        (
            ic_for("openstack", arm),
            vec!["--stream", aarch64_stream.to_str().unwrap()],
            "no artifacts for architecture 'x86_64'",
        ),
        // the install-config says arm64
        (
            ic_for("openstack", arm)
                .replace("controlPlane:\n", "controlPlane:\n  architecture: arm64\n"),
            vec!["--stream", &platforms],
            "architecture 'aarch64'",
        ),
        (
            ic_for("openstack", arm),
            vec!["--stream", &platforms, "--stream-arch", "aarch64"],
            "--stream-arch aarch64",
        ),
        // a missing format
        (
            ic_for("vsphere", "\n    apiVIPs: [192.0.2.5]"),
            vec!["--stream", no_ova.to_str().unwrap()],
            "no ova format",
        ),
        // options for another platform
        (
            ic_for("openstack", arm),
            vec!["--stream", &platforms, "--platform", "vsphere"],
            "--platform vsphere",
        ),
        (
            ic_for("openstack", arm),
            vec!["--aws-ami", "ami-0123456789abcdef0"],
            "--aws-ami",
        ),
        (
            ic_for("aws", "\n    region: r"),
            vec!["--aws-ami", "ami-nothex"],
            "ami-nothex",
        ),
        (
            ic_for("gcp", "\n    region: r"),
            vec!["--gcp-image", "just-a-name"],
            "just-a-name",
        ),
        (
            ic_for("openstack", arm),
            vec!["--stream", &platforms, "--stream-platform", "metal"],
            "--stream-platform metal",
        ),
        (
            ic_for("powervs", "\n    zone: z"),
            vec!["--stream", &platforms],
            "'powervs'",
        ),
        (
            ic_for("aws", "\n    region: r"),
            vec![
                "--cluster-os-image",
                "http://h/x.vmdk",
                "--disk",
                &only_metal,
            ],
            "--cluster-os-image",
        ),
    ];
    for (text, opts, culprit) in cases {
        let ic = dir.path().join("install-config.yaml");
        std::fs::write(&ic, &text).unwrap();
        let mut args = vec!["install-config", "--install-config", ic.to_str().unwrap()];
        args.extend(opts.iter().copied());
        let out = layerboot(&args);
        assert_refused(&out, culprit);
        assert_eq!(
            std::fs::read_to_string(&ic).unwrap(),
            text,
            "{culprit}: file changed"
        );
        assert!(out.stdout.is_empty());
    }
}
