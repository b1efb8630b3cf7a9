//! Names and pull specs as the Kubernetes API and the MachineOSConfig CRD accept them.
//! Checked here so that a bad value fails before anything is written, with the rule named,
//! instead of when the API server rejects the manifest during bootstrap.

use anyhow::{bail, Result};
use regex::Regex;
use std::sync::LazyLock;

/// Pools that exist in every cluster: no MachineConfigPool is written for them.
pub const BUILTIN_POOLS: &[&str] = &["worker", "master", "arbiter"];

/// A pool name must be a DNS-1123 *label*, not just a subdomain as the MachineConfigPool
/// object name allows: the pool name is also the name part of the node label
/// `node-role.kubernetes.io/<pool>` (at most 63 characters, no dots needed) and of the
/// MachineConfig names we derive from it.
pub fn validate_pool_name(pool: &str) -> Result<()> {
    if !is_dns1123_label(pool) {
        bail!(
            "invalid pool name '{pool}': must be a DNS-1123 label (lowercase letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)"
        );
    }
    Ok(())
}

/// Custom pools inherit from `worker` (their selector is role In [worker, <pool>]); the MCO
/// does not support custom pools of control-plane nodes, and a name that says otherwise is
/// a mistake we refuse rather than render a pool that would never match a master.
pub fn validate_not_control_plane(pool: &str) -> Result<()> {
    if BUILTIN_POOLS.contains(&pool) {
        return Ok(());
    }
    let cp_prefixes = ["master", "control-plane", "controlplane", "arbiter"];
    if cp_prefixes.iter().any(|p| pool.starts_with(p)) {
        bail!(
            "pool '{pool}' looks like a custom control-plane pool: custom pools on control-plane nodes are not supported \
             by the Machine Config Operator; use the built-in 'master' pool"
        );
    }
    Ok(())
}

pub fn is_custom_pool(pool: &str) -> bool {
    !BUILTIN_POOLS.contains(&pool)
}

pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters (Secret names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// The two alternatives of the MachineOSConfig CRD's CEL rule on
/// `spec.renderedImagePushSpec`, as the regex text inside `self.matches('…')` after CEL
/// string unescaping. A test compares them with the CRD in `../shared/reference/`.
pub const PUSH_SPEC_PATTERNS: [&str; 2] = [
    r"^([a-zA-Z0-9-]+\.)+[a-zA-Z0-9-]+(:[0-9]{2,5})?(/[a-zA-Z0-9-_]{1,61})*/[a-zA-Z0-9-_.]+:[a-zA-Z0-9._-]+$",
    r"^[^.]+\.[^.]+\.svc:\d+\/[^\/]+\/[^\/]+:[^\/]+$",
];
/// The CRD's length bounds on the same field.
pub const PUSH_SPEC_MAX_LEN: usize = 447;

static PUSH_SPEC_RES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PUSH_SPEC_PATTERNS
        .iter()
        .map(|p| Regex::new(p).expect("CRD pattern compiles"))
        .collect()
});

pub fn validate_push_spec(spec: &str) -> Result<()> {
    if spec.is_empty() || spec.len() > PUSH_SPEC_MAX_LEN {
        bail!("push spec '{spec}' must be 1 to {PUSH_SPEC_MAX_LEN} characters (MachineOSConfig renderedImagePushSpec)");
    }
    if !PUSH_SPEC_RES.iter().any(|re| re.is_match(spec)) {
        bail!(
            "push spec '{spec}' does not match the MachineOSConfig CRD's renderedImagePushSpec pattern: \
             it must be a tagged pull spec host[:port][/namespace]/name:<tag> (no digest), \
             or svc_name.namespace.svc:port/repository/name:<tag>"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names() {
        let cases = [
            ("worker", true),
            ("worker-automount", true),
            ("infra2", true),
            ("Worker", false),
            ("worker_gpu", false),
            ("-worker", false),
            ("worker-", false),
            ("", false),
            ("a.b", false),
            (&"x".repeat(63), true),
            (&"x".repeat(64), false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_pool_name(name).is_ok(), ok, "{name}");
        }
        let e = validate_pool_name("Worker").unwrap_err().to_string();
        assert!(e.contains("'Worker'") && e.contains("DNS-1123"), "{e}");
    }

    #[test]
    fn control_plane_pools() {
        for (name, ok) in [
            ("master", true),
            ("worker", true),
            ("arbiter", true),
            ("master-gpu", false),
            ("control-plane", false),
            ("infra", true),
        ] {
            assert_eq!(validate_not_control_plane(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn push_specs() {
        let cases = [
            ("quay.io/acme/os-image:worker", true),
            ("registry.example.com:5000/ns/sub/os-image:v1", true),
            ("image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os-image:latest", true),
            ("quay.io/acme/os-image", false),
            ("quay.io/acme/os-image@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false),
            ("localhost/os-image:latest", false),
            ("", false),
        ];
        for (spec, ok) in cases {
            assert_eq!(validate_push_spec(spec).is_ok(), ok, "{spec}");
        }
    }
}
