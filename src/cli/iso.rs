//! `layerboot iso …`: customize, show and reset CoreOS live ISOs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::ignition::pointer;
use crate::iso::{self, Console, Customize, LiveIso, LiveSpec, Named, Report, Target};

#[derive(Debug, Args)]
pub struct IsoArgs {
    #[command(subcommand)]
    pub command: IsoCommand,
}

#[derive(Debug, Subcommand)]
pub enum IsoCommand {
    /// Embed Ignition, installer settings, network keyfiles and kernel arguments into a
    /// CoreOS live ISO (coreos-installer `iso customize` compatible)
    Customize(Box<CustomizeArgs>),
    /// Show what a live ISO carries: Ignition, installer config, keyfiles, kernel arguments
    Show(ShowArgs),
    /// Restore a live ISO's pristine embed areas (no Ignition, default kernel arguments)
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct CustomizeArgs {
    /// The live ISO (modified in place unless -o is given)
    #[arg(value_name = "ISO")]
    pub input: PathBuf,
    /// Write the result here instead (`-` for stdout); the input is left untouched
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace the customizations of an already customized ISO, and an existing -o file
    #[arg(short, long)]
    pub force: bool,

    /// Print what was written as JSON on stdout (see docs/json.md); needs the ISO in a file
    #[arg(long)]
    pub json: bool,

    /// Ignition config for the live system (merged into the embedded live config)
    #[arg(long, value_name = "FILE")]
    pub live_ignition: Vec<PathBuf>,
    /// Ignition config for the installed system (runs the installer at boot)
    #[arg(long, value_name = "FILE")]
    pub dest_ignition: Vec<PathBuf>,
    /// Install with the pointer Ignition config of this OpenShift pool as the destination
    /// config (the node fetches its config from the Machine Config Server); needs
    /// --cluster/--base-domain or --api-vip, and --ca or --from
    #[arg(long, value_name = "POOL")]
    pub pointer_pool: Option<String>,
    /// Cluster name for --pointer-pool: MCS at api-int.<cluster>.<base-domain>:22623
    #[arg(
        long,
        value_name = "NAME",
        requires = "pointer_pool",
        requires = "base_domain",
        conflicts_with = "api_vip"
    )]
    pub cluster: Option<String>,
    /// Base domain of the cluster, for --pointer-pool
    #[arg(
        long,
        value_name = "DOMAIN",
        requires = "pointer_pool",
        requires = "cluster"
    )]
    pub base_domain: Option<String>,
    /// Reach the MCS at the API VIP, for --pointer-pool (as openshift-install does on bare metal)
    #[arg(long, value_name = "IP", requires = "pointer_pool")]
    pub api_vip: Option<std::net::IpAddr>,
    /// The cluster's root CA (PEM), trusted by the pointer config
    #[arg(
        long,
        value_name = "FILE",
        requires = "pointer_pool",
        conflicts_with = "from"
    )]
    pub ca: Option<PathBuf>,
    /// Take the CA (and, without --cluster/--api-vip, the endpoint) from an existing
    /// pointer config such as openshift-install's worker.ign
    #[arg(long, value_name = "FILE", requires = "pointer_pool")]
    pub from: Option<PathBuf>,
    /// Ignition spec version of the pointer config (default: what `layerboot ignition pointer` picks)
    #[arg(long, value_name = "VERSION", requires = "pointer_pool")]
    pub pointer_spec: Option<String>,
    /// Install to this device at boot, without confirmation
    #[arg(long, value_name = "DEVICE")]
    pub dest_device: Option<String>,
    /// Kernel argument to append on the installed system
    #[arg(long, value_name = "ARG")]
    pub dest_karg_append: Vec<String>,
    /// Kernel argument to delete on the installed system
    #[arg(long, value_name = "ARG")]
    pub dest_karg_delete: Vec<String>,
    /// Kernel and bootloader console for the installed system (e.g. ttyS0,115200n8)
    #[arg(long, value_name = "SPEC")]
    pub dest_console: Vec<Console>,
    /// Install this metal image (e.g. one built by `layerboot disk`) instead of the stock one.
    /// Images layerboot builds carry no Fedora/Red Hat GPG signature (URL.sig): pass
    /// --insecure with them
    #[arg(long, value_name = "URL")]
    pub image_url: Option<url::Url>,
    /// Let the installer take --image-url without a detached GPG signature (URL.sig); needed
    /// for images layerboot builds, which are unsigned
    #[arg(long, requires = "image_url")]
    pub insecure: bool,
    /// NetworkManager keyfile for the live system (and the installed one)
    #[arg(long, value_name = "FILE")]
    pub network_keyfile: Vec<PathBuf>,
    /// PEM CA bundle Ignition trusts (live system and installed system)
    #[arg(long, value_name = "FILE")]
    pub ignition_ca: Vec<PathBuf>,
    /// Kernel argument to append for the live system
    #[arg(long, value_name = "ARG")]
    pub live_karg_append: Vec<String>,
    /// Default kernel argument to delete for the live system
    #[arg(long, value_name = "ARG")]
    pub live_karg_delete: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(value_name = "ISO")]
    pub input: PathBuf,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Show embedded credentials, password hashes and keyfile secrets (redacted by default)
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The live ISO (modified in place unless -o is given)
    #[arg(value_name = "ISO")]
    pub input: PathBuf,
    /// Write the result here instead (`-` for stdout)
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace an existing -o file
    #[arg(short, long)]
    pub force: bool,
}

fn read_named(path: &Path) -> Result<Named> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Named::new(path.display().to_string(), data))
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Named>> {
    paths.iter().map(|p| read_named(p)).collect()
}

impl CustomizeArgs {
    /// The pool's pointer Ignition config, rendered by `layerboot ignition pointer`'s code.
    fn pointer_config(&self) -> Result<Option<Named>> {
        let Some(pool) = &self.pointer_pool else {
            return Ok(None);
        };
        if self.ca.is_none() && self.from.is_none() {
            bail!("--pointer-pool {pool} needs the cluster's root CA: give --ca FILE, or --from an existing pointer config (worker.ign)");
        }
        let inputs = pointer::PointerInputs {
            pool: pool.clone(),
            cluster: self.cluster.clone(),
            base_domain: self.base_domain.clone(),
            api_vip: self.api_vip,
            ca: self.ca.clone(),
            from: self.from.clone(),
            spec: self.pointer_spec.clone(),
        };
        let settings = inputs
            .settings()
            .with_context(|| format!("--pointer-pool {pool}"))?;
        let rendered =
            pointer::render(&settings).with_context(|| format!("--pointer-pool {pool}"))?;
        Ok(Some(Named::new(
            format!("pointer config for pool {pool}"),
            rendered,
        )))
    }

    /// Read every input file and build the request; nothing touches the ISO yet.
    pub fn resolve(&self) -> Result<Customize> {
        let network_keyfiles = self
            .network_keyfile
            .iter()
            .map(|p| {
                let name = p
                    .file_name()
                    .with_context(|| format!("{} has no file name", p.display()))?
                    .to_string_lossy()
                    .into_owned();
                Ok(Named::new(
                    name,
                    std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Customize {
            spec: LiveSpec {
                live_ignition: read_all(&self.live_ignition)?,
                dest_ignition: read_all(&self.dest_ignition)?
                    .into_iter()
                    .chain(self.pointer_config()?)
                    .collect(),
                dest_device: self.dest_device.clone(),
                dest_console: self.dest_console.clone(),
                dest_karg_append: self.dest_karg_append.clone(),
                dest_karg_delete: self.dest_karg_delete.clone(),
                image_url: self.image_url.clone(),
                insecure: self.insecure,
                network_keyfiles,
                ignition_ca: read_all(&self.ignition_ca)?,
            },
            live_karg_append: self.live_karg_append.clone(),
            live_karg_delete: self.live_karg_delete.clone(),
            force: self.force,
        })
    }
}

fn describe(target: Target, input: &Path) -> String {
    match target {
        Target::InPlace => format!("{} (in place)", input.display()),
        Target::File(p) => p.display().to_string(),
        Target::Stdout => "stdout".into(),
    }
}

/// Run a blocking ISO operation; it checks the cancel token itself (a signal stops its
/// copy and an `-o` output's temporary file is removed), and is awaited to the end so
/// that nothing of it runs on after we exit.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("ISO task panicked")?
}

pub async fn run(args: IsoArgs, cancel: &crate::cancel::Cancel) -> Result<ExitCode> {
    match args.command {
        IsoCommand::Customize(a) => {
            if a.json && a.output.as_deref() == Some(Path::new("-")) {
                bail!("--json prints to stdout, where -o - sends the ISO: write the ISO to a file");
            }
            if let Some(o) = a.output.as_deref().filter(|o| *o != Path::new("-")) {
                let mut inputs: Vec<&Path> = vec![&a.input];
                inputs.extend(a.live_ignition.iter().map(PathBuf::as_path));
                inputs.extend(a.dest_ignition.iter().map(PathBuf::as_path));
                inputs.extend(a.network_keyfile.iter().map(PathBuf::as_path));
                inputs.extend(a.ignition_ca.iter().map(PathBuf::as_path));
                inputs.extend(a.ca.iter().chain(&a.from).map(PathBuf::as_path));
                crate::io::check_output(o, &inputs, a.force)?;
            }
            let req = a.resolve()?;
            let (input, output) = (a.input.clone(), a.output.clone());
            let cancel = cancel.clone();
            let plan = blocking(move || {
                iso::customize(
                    &input,
                    &req,
                    Target::from_output(output.as_deref()),
                    &cancel,
                )
            })
            .await?;
            let target = Target::from_output(a.output.as_deref());
            for n in &plan.notes {
                crate::errln!("{n}");
            }
            if a.json {
                let report = CustomizeReport {
                    output: a.output.as_deref().unwrap_or(&a.input),
                    in_place: a.output.is_none(),
                    plan: &plan,
                };
                crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                let bytes: u64 = plan.writes.iter().map(|w| w.length).sum();
                crate::infoln!(
                    "customized {}: wrote {} embed areas ({bytes} bytes)",
                    describe(target, &a.input),
                    plan.writes.len()
                );
            }
        }
        IsoCommand::Show(a) => {
            let mut report = Report::new(&LiveIso::open(&a.input)?)?;
            if !a.show_secrets && !report.redact().is_empty() {
                crate::errln!(
                    "note: secrets redacted ({}); --show-secrets shows them",
                    report.redacted.join(", ")
                );
            }
            if a.json {
                crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                crate::out!("{}", report.render())?;
            }
        }
        IsoCommand::Reset(a) => {
            if let Some(o) = a.output.as_deref().filter(|o| *o != Path::new("-")) {
                crate::io::check_output(o, &[&a.input], a.force)?;
            }
            let (input, output) = (a.input.clone(), a.output.clone());
            let cancel = cancel.clone();
            blocking(move || iso::reset(&input, Target::from_output(output.as_deref()), &cancel))
                .await?;
            let target = Target::from_output(a.output.as_deref());
            crate::infoln!(
                "reset {}: no embedded Ignition, default kernel arguments",
                describe(target, &a.input)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `iso customize --json` (schema in docs/json.md).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomizeReport<'a> {
    output: &'a Path,
    in_place: bool,
    #[serde(flatten)]
    plan: &'a crate::iso::plan::IsoWrites,
}
