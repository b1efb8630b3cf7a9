//! The OpenShift pointer Ignition config: what a node boots with so that Ignition fetches
//! its real config from the Machine Config Server. Same shape as openshift-install's
//! `worker.ign`: `ignition.config.merge[0].source = https://<host>:22623/config/<pool>` and
//! the cluster's root CA (which signs the MCS certificate) as a `data:` URL in
//! `ignition.security.tls.certificateAuthorities`.
//!
//! Library entry point (used by `iso customize --pointer-pool`): fill a
//! [`PointerSettings`] and call [`render`].

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use super::{data_url, decode_data_url, to_json, SpecVersion};
use crate::cacert::CaBundle;
use crate::openshift::manifests::names;

/// The Machine Config Server's port.
pub const MCS_PORT: u16 = 22623;

/// Where nodes reach the Machine Config Server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `api-int.<cluster>.<base_domain>`: the installer's default on every platform where
    /// DNS is in place before Ignition runs.
    ClusterDomain {
        cluster: String,
        base_domain: String,
    },
    /// The API VIP, as the installer does on bare metal where DNS may not be ready.
    ApiVip(IpAddr),
}

impl Endpoint {
    pub fn validate(&self) -> Result<()> {
        if let Endpoint::ClusterDomain {
            cluster,
            base_domain,
        } = self
        {
            if !names::is_dns1123_label(cluster) {
                bail!("invalid cluster name '{cluster}': must be a DNS-1123 label (lowercase letters, digits, '-')");
            }
            let bd = base_domain.trim_end_matches('.');
            if bd.is_empty() || !names::is_dns1123_subdomain(bd) {
                bail!("invalid base domain '{base_domain}': must be a lowercase DNS name like example.com");
            }
        }
        Ok(())
    }

    /// `https://host:22623` without a path.
    pub fn base_url(&self) -> String {
        match self {
            Endpoint::ClusterDomain {
                cluster,
                base_domain,
            } => {
                format!(
                    "https://api-int.{cluster}.{}:{MCS_PORT}",
                    base_domain.trim_end_matches('.')
                )
            }
            Endpoint::ApiVip(IpAddr::V4(ip)) => format!("https://{ip}:{MCS_PORT}"),
            Endpoint::ApiVip(IpAddr::V6(ip)) => format!("https://[{ip}]:{MCS_PORT}"),
        }
    }
}

/// Where the root CA comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// PEM certificate(s), e.g. the cluster's root CA.
    Pem(Vec<u8>),
    /// An existing pointer config (openshift-install's `worker.ign`): its CA, and its MCS
    /// endpoint when [`PointerSettings::endpoint`] is `None`.
    PointerIgnition(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct PointerSettings {
    pub pool: String,
    /// `None` only with [`CaSource::PointerIgnition`]: reuse its endpoint.
    pub endpoint: Option<Endpoint>,
    pub ca: CaSource,
    pub spec: SpecVersion,
}

/// What an existing pointer config tells us.
#[derive(Debug, Clone)]
pub struct ExistingPointer {
    /// `https://host:port` of its first merge (3.x) or append (2.x) source.
    pub base_url: String,
    pub ca: CaBundle,
}

/// Read an openshift-install pointer config of any spec (2.2 `append` or 3.x `merge`).
pub fn read_existing(bytes: &[u8], what: &str) -> Result<ExistingPointer> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{what}: not valid JSON"))?;
    let ign = &v["ignition"];
    let source = ["merge", "append"]
        .iter()
        .find_map(|k| ign["config"][k][0]["source"].as_str())
        .with_context(|| {
            format!("{what}: not a pointer config (no ignition.config.merge[0].source)")
        })?;
    let base_url = source
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(host, _)| format!("https://{host}"))
        .with_context(|| format!("{what}: merge source '{source}' is not an https URL"))?;
    let mut pem = Vec::new();
    for ca in ign["security"]["tls"]["certificateAuthorities"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let src = ca["source"].as_str().unwrap_or_default();
        let bytes = decode_data_url(src)
            .with_context(|| format!("{what}: certificate authority is not an inline data: URL"))?;
        pem.extend_from_slice(&bytes);
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
    }
    if pem.is_empty() {
        bail!("{what}: no ignition.security.tls.certificateAuthorities");
    }
    let ca = CaBundle::parse(&pem, &format!("{what} certificate authority"))?;
    Ok(ExistingPointer { base_url, ca })
}

/// The MCS URL a node of `pool` fetches.
pub fn source_url(base_url: &str, pool: &str) -> String {
    format!("{base_url}/config/{pool}")
}

macro_rules! pointer_config {
    ($m:ident, $source:expr, $ca:expr) => {{
        use ignition_config::$m as ign;
        let mut c = ign::Config::default();
        c.ignition.config = Some(ign::IgnitionConfig {
            merge: Some(vec![ign::Resource {
                source: Some($source),
                ..Default::default()
            }]),
            ..Default::default()
        });
        c.ignition.security = Some(ign::Security {
            tls: Some(ign::SecurityTls {
                certificate_authorities: Some(vec![ign::Resource {
                    source: Some($ca),
                    ..Default::default()
                }]),
            }),
        });
        to_json(&c)
    }};
}

/// Validate the settings and render the pointer config (JSON bytes, final newline).
pub fn render(s: &PointerSettings) -> Result<Vec<u8>> {
    names::validate_pool_name(&s.pool)?;
    let (base_url, ca) = match (&s.ca, &s.endpoint) {
        (CaSource::Pem(pem), Some(ep)) => {
            ep.validate()?;
            (ep.base_url(), CaBundle::parse(pem, "root CA")?)
        }
        (CaSource::Pem(_), None) => bail!("no Machine Config Server endpoint: give a cluster name and base domain, or the API VIP"),
        (CaSource::PointerIgnition(bytes), ep) => {
            let existing = read_existing(bytes, "existing pointer config")?;
            match ep {
                Some(ep) => {
                    ep.validate()?;
                    (ep.base_url(), existing.ca)
                }
                None => (existing.base_url, existing.ca),
            }
        }
    };
    let source = source_url(&base_url, &s.pool);
    let ca = data_url(ca.pem());
    match s.spec {
        SpecVersion::V3_2 => pointer_config!(v3_2, source, ca),
        SpecVersion::V3_3 => pointer_config!(v3_3, source, ca),
        SpecVersion::V3_4 => pointer_config!(v3_4, source, ca),
        SpecVersion::V3_5 => pointer_config!(v3_5, source, ca),
        SpecVersion::V3_6 => pointer_config!(v3_6, source, ca),
    }
}

/// What a pointer config is made from, as the user gives it: the pool, the Machine Config
/// Server endpoint (cluster and base domain, or the API VIP), the cluster's root CA (a PEM
/// file, or an existing pointer config to take it from) and the spec version.
#[derive(Debug, Clone, Default)]
pub struct PointerInputs {
    pub pool: String,
    pub cluster: Option<String>,
    pub base_domain: Option<String>,
    pub api_vip: Option<IpAddr>,
    pub ca: Option<std::path::PathBuf>,
    pub from: Option<std::path::PathBuf>,
    pub spec: Option<String>,
}

impl PointerInputs {
    /// Resolve into settings, reading the input files.
    pub fn settings(&self) -> Result<PointerSettings> {
        names::validate_pool_name(&self.pool)?;
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
            (None, None) => bail!("the pointer config needs the cluster's root CA: give --ca FILE, or --from an existing pointer config (worker.ign)"),
        };
        if let Some(ep) = &endpoint {
            ep.validate()?;
        }
        if endpoint.is_none() && matches!(ca, CaSource::Pem(_)) {
            bail!("no Machine Config Server endpoint: give --cluster and --base-domain, or --api-vip (or --from an existing pointer config)");
        }
        Ok(PointerSettings {
            pool: self.pool.clone(),
            endpoint,
            ca,
            spec,
        })
    }
}

/// A user's input file, its error naming what it is and where.
pub(crate) fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = include_bytes!("../../tests/golden/test-ca.crt");

    fn settings(endpoint: Option<Endpoint>, spec: SpecVersion) -> PointerSettings {
        PointerSettings {
            pool: "worker".into(),
            endpoint,
            ca: CaSource::Pem(CA.to_vec()),
            spec,
        }
    }

    #[test]
    fn endpoints() {
        let cases = [
            (
                Endpoint::ClusterDomain {
                    cluster: "ocp".into(),
                    base_domain: "example.com.".into(),
                },
                "https://api-int.ocp.example.com:22623",
            ),
            (
                Endpoint::ApiVip("192.0.2.10".parse().unwrap()),
                "https://192.0.2.10:22623",
            ),
            (
                Endpoint::ApiVip("fd00::5".parse().unwrap()),
                "https://[fd00::5]:22623",
            ),
        ];
        for (ep, want) in cases {
            assert_eq!(ep.base_url(), want);
        }
    }

    #[test]
    fn every_spec_roundtrips_with_the_installer_shape() {
        for spec in SpecVersion::ALL {
            let ep = Endpoint::ClusterDomain {
                cluster: "ocp".into(),
                base_domain: "example.com".into(),
            };
            let out = render(&settings(Some(ep), spec)).unwrap();
            crate::ignition::check_roundtrip(&out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["ignition"]["version"], spec.as_str());
            assert_eq!(
                v["ignition"]["config"]["merge"][0]["source"],
                "https://api-int.ocp.example.com:22623/config/worker"
            );
            let ca = v["ignition"]["security"]["tls"]["certificateAuthorities"][0]["source"]
                .as_str()
                .unwrap();
            assert!(ca.starts_with("data:text/plain;charset=utf-8;base64,"));
            assert_eq!(decode_data_url(ca).unwrap(), CA);
            // Feeding our own output back as --from reproduces it.
            let again = PointerSettings {
                pool: "worker".into(),
                endpoint: None,
                ca: CaSource::PointerIgnition(out.clone()),
                spec,
            };
            assert_eq!(render(&again).unwrap(), out);
        }
    }

    #[test]
    fn refusals() {
        let good = Endpoint::ApiVip("192.0.2.10".parse().unwrap());
        let mut s = settings(Some(good.clone()), SpecVersion::V3_2);
        s.pool = "Worker".into();
        assert!(render(&s).unwrap_err().to_string().contains("'Worker'"));
        let mut s = settings(Some(good), SpecVersion::V3_2);
        s.ca = CaSource::Pem(b"garbage".to_vec());
        assert!(format!("{:#}", render(&s).unwrap_err()).contains("no PEM certificate"));
        let s = settings(
            Some(Endpoint::ClusterDomain {
                cluster: "OCP".into(),
                base_domain: "example.com".into(),
            }),
            SpecVersion::V3_2,
        );
        assert!(render(&s)
            .unwrap_err()
            .to_string()
            .contains("cluster name 'OCP'"));
        let s = settings(None, SpecVersion::V3_2);
        assert!(render(&s).is_err());
    }

    #[test]
    fn reads_a_spec2_installer_pointer() {
        let v2 = serde_json::json!({
            "ignition": {"config": {"append": [{"source": "https://api-int.old.example.com:22623/config/worker", "verification": {}}]},
                         "security": {"tls": {"certificateAuthorities": [{"source": data_url(CA), "verification": {}}]}},
                         "version": "2.2.0"}
        });
        let e = read_existing(v2.to_string().as_bytes(), "worker.ign").unwrap();
        assert_eq!(e.base_url, "https://api-int.old.example.com:22623");
        assert_eq!(e.ca.pem(), CA);
    }
}
