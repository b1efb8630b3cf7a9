//! `layerboot ignition pointer|rebase`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::cli::manifests::ImageSourceArgs;
use crate::ignition::pointer::{self, CaSource, Endpoint, PointerSettings};
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
    /// Resolve into settings, reading the input files.
    pub fn settings(&self) -> Result<PointerSettings> {
        crate::manifests::names::validate_pool_name(&self.pool)?;
        let spec = self
            .spec
            .as_deref()
            .map(str::parse::<SpecVersion>)
            .transpose()?
            .unwrap_or_default();
        let endpoint = match (&self.cluster, &self.base_domain, self.api_vip) {
            (Some(c), Some(d), None) => Some(Endpoint::ClusterDomain {
                cluster: c.clone(),
                base_domain: d.clone(),
            }),
            (None, None, Some(ip)) => Some(Endpoint::ApiVip(ip)),
            _ => None,
        };
        let ca = match (&self.ca, &self.from) {
            (Some(p), _) => CaSource::Pem(read(p, "CA file")?),
            (None, Some(p)) => CaSource::PointerIgnition(read(p, "pointer config")?),
            (None, None) => unreachable!("clap requires --ca or --from"),
        };
        if let Some(ep) = &endpoint {
            ep.validate()?;
        }
        if endpoint.is_none() && matches!(ca, CaSource::Pem(_)) {
            anyhow::bail!("no Machine Config Server endpoint: give --cluster and --base-domain, or --api-vip (or --from an existing pointer config)");
        }
        Ok(PointerSettings {
            pool: self.pool.clone(),
            endpoint,
            ca,
            spec,
        })
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
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
            let settings = a.settings()?;
            // Pool and endpoint are checked in settings(), so what render() can still
            // refuse is the CA: name the file the user gave.
            let rendered = pointer::render(&settings).map_err(|e| match (&a.ca, &a.from) {
                (Some(p), _) => e.context(format!("--ca {}", p.display())),
                (None, Some(p)) => e.context(format!("--from {}", p.display())),
                _ => e,
            })?;
            crate::errln!(
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
    let image = crate::cli::manifests::registry_ref(&a.image)?;
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
        let bytes = read(p, "Ignition config")?;
        let what = format!("--merge {}", p.display());
        rebase::check_merge_config(&bytes, &what, spec)?;
        merge.push((what, bytes));
    }
    let reg = a.source.registry.resolve()?;
    let auth_json = crate::cli::install_config::entry_for_image(&reg.auth.merged()?, &image)
        .map(|(_, one)| one.to_json_pretty().into_bytes());
    let to_stdout = a.output.as_ref().is_none_or(|p| p.as_os_str() == "-");
    if auth_json.is_some() && to_stdout && !a.show_secrets {
        bail!("the config holds registry credentials for {}: write it with -o FILE (mode 0600), or pass --show-secrets to print it", image.registry);
    }
    let pinned = crate::cli::manifests::pin(&image, &reg, a.source.offline).await?;
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
    crate::errln!("{}", SpecVersion::explain(spec_given));
    crate::errln!(
        "switch: {} to {}",
        match switcher {
            rebase::Switcher::Bootc => "bootc switch (image has containers.bootc=1)",
            rebase::Switcher::RpmOstree => "rpm-ostree rebase ostree-unverified-registry:",
        },
        pinned.image
    );
    if has_secret {
        let files: Vec<String> = reg.auth.files().map(|p| p.display().to_string()).collect();
        crate::errln!(
            "credentials for {} (from {}) go to /etc/ostree/auth.json, mode 0600",
            image.registry,
            files.join(", ")
        );
    } else {
        crate::errln!("note: no credentials for {} in the authfile: no /etc/ostree/auth.json (fine for a public image)", image.registry);
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
