//! `layerboot ignition pointer|rebase`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::cli::registry_args::ImageSourceArgs;
use crate::ignition::pointer;
use crate::ignition::rebase;
use crate::ignition::SpecVersion;

#[derive(Debug, Args)]
pub struct IgnitionArgs {
    #[command(subcommand)]
    pub command: IgnitionCommand,
}

#[derive(Debug, Subcommand)]
pub enum IgnitionCommand {
    /// The pointer Ignition config of an OpenShift pool (what openshift-install writes as
    /// worker.ign), for any pool: it makes the node fetch its config from the Machine
    /// Config Server.
    Pointer(PointerArgs),
    /// First-boot config for standalone Fedora/CentOS CoreOS: registry auth, then one
    /// switch to the layered image (rpm-ostree rebase, or bootc switch for bootc images)
    /// and exactly one reboot.
    Rebase(RebaseArgs),
}

#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The layered image (a tag is resolved to its digest first).
    pub image: String,
    /// ssh public key file(s) for user core.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Ignition configs to merge in (inline, via ignition.config.merge; repeatable).
    #[arg(long, value_name = "FILE")]
    pub merge: Vec<PathBuf>,
    /// Ignition spec version to emit: 3.2.0 (default) .. 3.6.0.
    #[arg(long, value_name = "VERSION")]
    pub spec: Option<String>,
    /// Write to FILE (mode 0600 when it holds registry credentials) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Allow printing a config that holds registry credentials to stdout.
    #[arg(long)]
    pub show_secrets: bool,
    #[command(flatten)]
    pub source: ImageSourceArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("endpoint").args(["cluster", "api_vip"])))]
#[command(group(clap::ArgGroup::new("ca_source").args(["ca", "from"]).required(true)))]
pub struct PointerArgs {
    /// Machine config pool whose config the node fetches (/config/<pool>).
    #[arg(long, value_name = "POOL")]
    pub pool: String,
    /// Cluster name: the MCS is reached at api-int.<cluster>.<base-domain>:22623.
    #[arg(long, value_name = "NAME", requires = "base_domain")]
    pub cluster: Option<String>,
    /// Base domain of the cluster (install-config baseDomain).
    #[arg(long, value_name = "DOMAIN", requires = "cluster")]
    pub base_domain: Option<String>,
    /// Reach the MCS at the API VIP instead of api-int (as openshift-install does on bare metal).
    #[arg(long, value_name = "IP")]
    pub api_vip: Option<std::net::IpAddr>,
    /// Root CA of the cluster (PEM) that signs the Machine Config Server certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Take the CA (and, without --cluster/--api-vip, the endpoint) from an existing pointer
    /// config such as openshift-install's worker.ign.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Ignition spec version to emit: 3.2.0 (default) .. 3.6.0.
    #[arg(long, value_name = "VERSION")]
    pub spec: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl PointerArgs {
    /// The pointer config's inputs as the domain takes them (`ignition pointer` and
    /// `iso customize --pointer-pool` both build one).
    pub fn inputs(&self) -> pointer::PointerInputs {
        pointer::PointerInputs {
            pool: self.pool.clone(),
            cluster: self.cluster.clone(),
            base_domain: self.base_domain.clone(),
            api_vip: self.api_vip,
            ca: self.ca.clone(),
            from: self.from.clone(),
            spec: self.spec.clone(),
        }
    }
}

pub async fn run(args: IgnitionArgs) -> Result<()> {
    match args.command {
        IgnitionCommand::Rebase(a) => rebase(a).await,
        IgnitionCommand::Pointer(a) => {
            if let Some(o) = a.output.as_deref().filter(|o| o.as_os_str() != "-") {
                // Replacing an earlier output is expected; replacing an input is not.
                let inputs: Vec<&std::path::Path> =
                    a.ca.iter().chain(&a.from).map(PathBuf::as_path).collect();
                crate::io::check_output(o, &inputs, true)?;
            }
            let settings = a.inputs().settings()?;
            // Pool and endpoint are checked in settings(), so what render() can still
            // refuse is the CA: name the file the user gave.
            let rendered = pointer::render(&settings).map_err(|e| match (&a.ca, &a.from) {
                (Some(p), _) => e.context(format!("--ca {}", p.display())),
                (None, Some(p)) => e.context(format!("--from {}", p.display())),
                _ => e,
            })?;
            crate::infoln!(
                "{}",
                SpecVersion::explain(a.spec.as_ref().map(|_| settings.spec))
            );
            emit(a.output.as_deref(), &rendered, 0o644)
        }
    }
}

async fn rebase(a: RebaseArgs) -> Result<()> {
    if let Some(o) = a.output.as_deref().filter(|o| o.as_os_str() != "-") {
        let inputs: Vec<&std::path::Path> = a
            .ssh_keys
            .iter()
            .chain(&a.merge)
            .map(PathBuf::as_path)
            .collect();
        crate::io::check_output(o, &inputs, true)?;
    }
    let image = crate::image::registry_ref(&a.image)?;
    let spec_given = a
        .spec
        .as_deref()
        .map(str::parse::<SpecVersion>)
        .transpose()?;
    let spec = spec_given.unwrap_or_default();
    let mut ssh_keys = Vec::new();
    for p in &a.ssh_keys {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading ssh key {}", p.display()))?;
        ssh_keys.extend(rebase::parse_ssh_keys(
            &text,
            &format!("ssh key {}", p.display()),
        )?);
    }
    let mut merge = Vec::new();
    for p in &a.merge {
        let bytes = pointer::read(p, "Ignition config")?;
        let what = format!("--merge {}", p.display());
        rebase::check_merge_config(&bytes, &what, spec)?;
        merge.push((what, bytes));
    }
    let reg = a.source.registry.resolve()?;
    let auth_json = reg
        .auth
        .merged()?
        .single_entry_for(&image)
        .map(|(_, one)| one.to_json_pretty().into_bytes());
    let to_stdout = a.output.as_ref().is_none_or(|p| p.as_os_str() == "-");
    if auth_json.is_some() && to_stdout && !a.show_secrets {
        bail!("the config holds registry credentials for {}: write it with -o FILE (mode 0600), or pass --show-secrets to print it", image.registry);
    }
    let pinned = crate::image::pin(&image, &reg, a.source.offline).await?;
    let switcher = if pinned.bootc {
        rebase::Switcher::Bootc
    } else {
        rebase::Switcher::RpmOstree
    };
    let has_secret = auth_json.is_some();
    let settings = rebase::RebaseSettings {
        image: pinned.image.clone(),
        switcher,
        auth_json,
        ssh_keys,
        merge,
        spec,
    };
    let rendered = rebase::render(&settings)?;
    crate::infoln!("{}", SpecVersion::explain(spec_given));
    crate::infoln!(
        "switch: {} to {}",
        match switcher {
            rebase::Switcher::Bootc => "bootc switch (image has containers.bootc=1)",
            rebase::Switcher::RpmOstree => "rpm-ostree rebase ostree-unverified-registry:",
        },
        pinned.image
    );
    if has_secret {
        let files: Vec<String> = reg.auth.files().map(|p| p.display().to_string()).collect();
        crate::infoln!(
            "credentials for {} (from {}) go to /etc/ostree/auth.json, mode 0600",
            image.registry,
            files.join(", ")
        );
    } else {
        crate::infoln!("note: no credentials for {} in the authfile: no /etc/ostree/auth.json (fine for a public image)", image.registry);
    }
    emit(
        a.output.as_deref(),
        &rendered,
        if has_secret { 0o600 } else { 0o644 },
    )
}

/// Write to a file atomically, or to stdout.
pub fn emit(output: Option<&std::path::Path>, bytes: &[u8], mode: u32) -> Result<()> {
    match output {
        Some(p) if p.as_os_str() != "-" => crate::io::write_atomic(p, bytes, mode),
        _ => crate::output::stdout_bytes(bytes),
    }
}
