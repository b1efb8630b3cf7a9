//! layerboot-testkit: a development tool for layerboot's demo (examples/demo.sh) and
//! benchmarks (benches/), not part of the product. It exposes the same fixtures and
//! services the test suite uses: real ostree-native images and a loopback registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use layerboot_testkit::{ostree_image, registry};

#[derive(Parser)]
#[command(
    name = "layerboot-testkit",
    about = "Fixtures and services for layerboot's demo and benchmarks (development tool)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// ostree commit --bootable + ostree-ext encapsulate
    Bootable,
    /// The bootable image plus one derived layer, as a Containerfile build adds
    Layered,
    /// ostree-native, no kernel, not bootable
    NonBootable,
    /// An index: the bootable image for the host arch and for arm64
    Multiarch,
}

#[derive(Subcommand)]
enum Cmd {
    /// Copy a test image (built once, cached) to an OCI layout directory, tag "latest".
    BuildTinyImage {
        #[arg(long, value_enum, default_value = "layered")]
        kind: Kind,
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Run a loopback docker-registry until killed; with --info-file, write
    /// shell-sourceable ADDR=…, AUTHFILE=…, CA_FILE=… lines there once it is ready.
    ServeRegistry {
        #[arg(long, default_value = "anonymous")]
        mode: registry::Mode,
        /// Push an OCI layout: DIR=REPO:TAG (repeatable).
        #[arg(long, value_name = "DIR=REPO:TAG")]
        push: Vec<String>,
        #[arg(long, value_name = "FILE")]
        info_file: Option<PathBuf>,
    },
    /// Copy the bootable example layered image (examples/debian-layered: Debian 12,
    /// Ignition, a derived layer printing LAYERED-OK) to an OCI layout; built once, needs root.
    BuildExampleImage {
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Copy the live ISO fixture (CoreOS live ISO layout, Debian kernel, a guest that
    /// prints what the ISO embeds) to FILE; built once and cached.
    BuildLiveIso {
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Copy an OCI layout (blobs hard-linked) and give image FROM one more layer of
    /// MIB MiB of random bytes, tagged "grown": a bigger image for benchmarks.
    GrowImage {
        #[arg(long, value_name = "DIR")]
        layout: PathBuf,
        #[arg(long, value_name = "TAG")]
        from: String,
        #[arg(long, value_name = "MIB")]
        filler_mib: u64,
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// An image of random (incompressible) uncompressed tar layers, for benchmarks.
    MakeBenchImage {
        #[arg(long, value_name = "N")]
        size_mib: u64,
        #[arg(long, value_name = "K", default_value_t = 8)]
        layers: u32,
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::BuildTinyImage { kind, to } => {
            let src = match kind {
                Kind::Bootable => ostree_image::bootable_image()?,
                Kind::Layered => ostree_image::layered_image()?,
                Kind::NonBootable => ostree_image::non_bootable_image()?,
                Kind::Multiarch => ostree_image::multiarch_image()?,
            };
            if to.exists() {
                anyhow::bail!("{} already exists", to.display());
            }
            ostree_image::copy_dir(&src, &to)?;
            println!("oci:{}:{}", to.display(), ostree_image::FIXTURE_TAG);
            Ok(())
        }
        Cmd::ServeRegistry {
            mode,
            push,
            info_file,
        } => {
            let reg = registry::LocalRegistry::start(mode)?;
            for p in &push {
                let (dir, target) = p
                    .split_once('=')
                    .with_context(|| format!("--push '{p}': expected DIR=REPO:TAG"))?;
                let pushed = reg.push_oci_dir(Path::new(dir), target)?;
                eprintln!("pushed {dir} as {pushed}");
            }
            let mut info = format!("ADDR={}\n", reg.addr());
            if let Some(a) = reg.authfile()? {
                info.push_str(&format!("AUTHFILE={}\n", a.display()));
            }
            if let Some(c) = reg.ca_path() {
                info.push_str(&format!("CA_FILE={}\n", c.display()));
            }
            match &info_file {
                Some(f) => layerboot::io::write_atomic(f, info.as_bytes(), 0o600)?,
                None => {
                    print!("{info}");
                    std::io::stdout().flush()?;
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                anyhow::Ok(())
            })?;
            drop(reg);
            Ok(())
        }
        Cmd::BuildExampleImage { to } => {
            let img = layerboot_testkit::layered_image::layered_image()?;
            if to.exists() {
                anyhow::bail!("{} already exists", to.display());
            }
            ostree_image::copy_dir(&img.oci_dir, &to)?;
            println!(
                "oci:{}:{}",
                to.display(),
                layerboot_testkit::layered_image::LAYERED_TAG
            );
            Ok(())
        }
        Cmd::BuildLiveIso { to } => {
            let iso = layerboot_testkit::liveiso::live_iso()?;
            if to.exists() {
                anyhow::bail!("{} already exists", to.display());
            }
            std::fs::copy(&iso, &to)
                .with_context(|| format!("copying {} to {}", iso.display(), to.display()))?;
            println!("{}", to.display());
            Ok(())
        }
        Cmd::GrowImage {
            layout,
            from,
            filler_mib,
            to,
        } => {
            layerboot_testkit::layered_image::grow_image(&layout, &from, &to, "grown", filler_mib)?;
            println!("oci:{}:grown", to.display());
            Ok(())
        }
        Cmd::MakeBenchImage {
            size_mib,
            layers,
            to,
        } => {
            let d = ostree_image::make_bench_image(&to, size_mib, layers)?;
            println!("oci:{}:{} {d}", to.display(), ostree_image::FIXTURE_TAG);
            Ok(())
        }
    }
}
