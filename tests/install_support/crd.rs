//! Validate manifests against the official CRDs in ../shared/reference/openshift-api/.
//!
//! A CRD's `openAPIV3Schema` is OpenAPI, not JSON Schema; it is translated for the
//! `jsonschema` crate (draft 4, the closest dialect):
//! - `nullable: true` becomes `anyOf [<schema>, {type: null}]`;
//! - `x-kubernetes-int-or-string` becomes `anyOf [integer, string]`;
//! - `x-kubernetes-validations` (CEL) rules we can express become JSON Schema: the
//!   `format.dns1123Subdomain()/dns1123Label()/dns1035Label()` checks and
//!   `self.matches('re') || …` become patterns; transition rules (`oldSelf`) do not apply
//!   on create; the object-level MachineOSConfig rule is checked by [`check_cel_root`];
//!   MachineConfiguration's rule shapes become JSON Schema too ([`translate_cel_shapes`]):
//!   "field B only with mode X", "a list holding type X has one element", "resource R needs
//!   mode A or B", and the root rules guarded by `status…mode == 'Automatic'` (we never
//!   write status, so the guard is false; a manifest claiming Automatic is rejected outright,
//!   stricter than the API server);
//!   any other rule fails the translation so nothing is silently skipped;
//! - objects with `properties` get `additionalProperties: false` unless they preserve
//!   unknown fields: the API server would *prune* an unknown (misspelled) field without an
//!   error, which we want to catch.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

pub fn reference_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/openshift-api");
    assert!(
        dir.is_dir(),
        "the OpenShift CRDs are missing: expected them in {} (the shared reference checkout beside the repo)",
        dir.display()
    );
    dir
}

pub fn load_crd(file: &str) -> Value {
    let path = reference_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading CRD {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing CRD {}: {e}", path.display()))
}

pub fn crd_file_for(kind: &str) -> &'static str {
    match kind {
        "MachineConfig" => "0000_80_machine-config_01_machineconfigs.crd.yaml",
        "MachineConfigPool" => "0000_80_machine-config_01_machineconfigpools.crd.yaml",
        "MachineOSConfig" => "0000_80_machine-config_01_machineosconfigs.crd.yaml",
        "MachineConfiguration" => "0000_80_machine-config_01_machineconfigurations.crd.yaml",
        other => panic!("no CRD for kind {other}"),
    }
}

pub fn openapi_schema(crd: &Value, version: &str) -> Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("CRD has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone()
}

/// CEL string literal body → regex text (CEL unescapes `\\` to `\`).
pub fn cel_unescape(s: &str) -> String {
    s.replace("\\\\", "\\")
}

/// The regexes in `self.matches('…')` calls of a CEL rule.
pub fn cel_matches_patterns(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rule;
    while let Some(i) = rest.find("self.matches('") {
        let after = &rest[i + "self.matches('".len()..];
        let end = after.find("')").expect("closing ') in CEL matches");
        out.push(cel_unescape(&after[..end]));
        rest = &after[end..];
    }
    out
}

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const DNS1035_LABEL: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Translate one schema node; `path` names it in panics.
pub fn to_json_schema(node: &Value, path: &str) -> Value {
    let Value::Object(m) = node else {
        return node.clone();
    };
    let mut out = Map::new();
    let mut extra_all_of = Vec::new();
    for (k, v) in m {
        match k.as_str() {
            "properties" => {
                let props = v
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(pk, pv)| (pk.clone(), to_json_schema(pv, &format!("{path}.{pk}"))))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), to_json_schema(v, &format!("{path}[]")));
            }
            "nullable"
            | "x-kubernetes-int-or-string"
            | "x-kubernetes-preserve-unknown-fields"
            | "description" => {}
            "x-kubernetes-validations" => {
                for rule in v.as_array().unwrap() {
                    let text = rule["rule"].as_str().unwrap();
                    if let Some(s) = translate_cel(text, path) {
                        extra_all_of.push(s);
                    }
                }
            }
            k2 if k2.starts_with("x-kubernetes-") => {}
            // OpenAPI formats (int32, int64, byte, …) are not JSON Schema formats.
            "format" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        extra_all_of.push(json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}));
    }
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if !extra_all_of.is_empty() {
        out.insert("allOf".into(), Value::Array(extra_all_of));
    }
    let schema = Value::Object(out);
    if m.get("nullable") == Some(&Value::Bool(true)) {
        json!({"anyOf": [schema, {"type": "null"}]})
    } else {
        schema
    }
}

fn translate_cel(rule: &str, path: &str) -> Option<Value> {
    let compact: String = rule.split_whitespace().collect::<Vec<_>>().join(" ");
    match compact.as_str() {
        "!format.dns1123Subdomain().validate(self).hasValue()" => {
            return Some(json!({"pattern": DNS1123_SUBDOMAIN}))
        }
        "!format.dns1123Label().validate(self).hasValue()" => {
            return Some(json!({"pattern": DNS1123_LABEL}))
        }
        "!format.dns1035Label().validate(self).hasValue()" => {
            return Some(json!({"pattern": DNS1035_LABEL}))
        }
        _ => {}
    }
    if compact.contains("oldSelf") && !compact.contains("self.metadata") {
        return None; // transition rule: only evaluated on update
    }
    if compact.contains("self.metadata.name == self.spec.machineConfigPool.name") {
        return None; // checked by check_cel_root
    }
    if let Some(schema) = translate_cel_shapes(&compact) {
        return Some(schema);
    }
    let alternatives: Vec<&str> = compact.split(" || ").collect();
    if alternatives
        .iter()
        .all(|a| a.starts_with("self.matches('") && a.ends_with("')"))
    {
        let pats = cel_matches_patterns(&compact);
        return Some(
            json!({"anyOf": pats.iter().map(|p| json!({"pattern": p})).collect::<Vec<_>>()}),
        );
    }
    if path.contains(".status") {
        return None; // we never write status
    }
    panic!("CEL rule at {path} has no translation, refusing to skip it: {rule}");
}

/// The rule shapes of MachineConfiguration's CRD, as JSON Schema (draft 4: no if/then, so
/// implications become anyOf).
fn translate_cel_shapes(rule: &str) -> Option<Value> {
    use regex::Regex;
    // has(self.mode) && (self.mode == 'X') ? has(self.b) : !has(self.b)
    let only_with = Regex::new(
        r"^has\(self\.(\w+)\) && \(?self\.(\w+) ?== ?'(\w+)'\)? \? has\(self\.(\w+)\) : !has\(self\.(\w+)\)$",
    )
    .unwrap();
    if let Some(c) = only_with.captures(rule) {
        let (mode, mode2, value, field, field2) = (&c[1], &c[2], &c[3], &c[4], &c[5]);
        assert!(
            mode == mode2 && field == field2,
            "unexpected rule shape: {rule}"
        );
        return Some(json!({"anyOf": [
            {"required": [mode, field], "properties": {mode: {"enum": [value]}}},
            {"not": {"required": [field]}, "anyOf": [
                {"not": {"required": [mode]}},
                {"properties": {mode: {"not": {"enum": [value]}}}}
            ]}
        ]}));
    }
    // self.exists(x, x.type=='X') ? size(self) == 1 : true
    let alone =
        Regex::new(r"^self\.exists\(x, x\.(\w+) ?== ?'(\w+)'\) \? size\(self\) == 1 : true$")
            .unwrap();
    if let Some(c) = alone.captures(rule) {
        let (field, value) = (&c[1], &c[2]);
        return Some(json!({"anyOf": [
            {"maxItems": 1},
            {"items": {"properties": {field: {"not": {"enum": [value]}}}}}
        ]}));
    }
    // self.resource != 'R' || self.selection.mode == 'A' || self.selection.mode == 'B'
    let needs =
        Regex::new(r"^self\.(\w+) != '(\w+)'((?: \|\| self\.(\w+)\.(\w+) == '\w+')+)$").unwrap();
    if let Some(c) = needs.captures(rule) {
        let (field, value) = (&c[1], &c[2]);
        let alt = Regex::new(r"self\.(\w+)\.(\w+) == '(\w+)'").unwrap();
        let alts: Vec<(String, String, String)> = alt
            .captures_iter(&c[3])
            .map(|a| (a[1].to_string(), a[2].to_string(), a[3].to_string()))
            .collect();
        assert!(
            alts.iter().all(|a| a.0 == alts[0].0 && a.1 == alts[0].1),
            "unexpected rule shape: {rule}"
        );
        let values: Vec<&str> = alts.iter().map(|a| a.2.as_str()).collect();
        return Some(json!({"anyOf": [
            {"properties": {field: {"not": {"enum": [value]}}}},
            {"properties": {alts[0].0.clone(): {"properties": {alts[0].1.clone(): {"enum": values}}}}}
        ]}));
    }
    // Root rules guarded by the status skew enforcement mode.
    let guard = "self.?status.bootImageSkewEnforcementStatus.mode.orValue(\"\") == 'Automatic' ? ";
    if rule.starts_with(guard) && rule.ends_with(": true") {
        return Some(json!({"anyOf": [
            {"not": {"required": ["status"]}},
            {"properties": {"status": {"anyOf": [
                {"not": {"required": ["bootImageSkewEnforcementStatus"]}},
                {"properties": {"bootImageSkewEnforcementStatus": {"anyOf": [
                    {"not": {"required": ["mode"]}},
                    {"properties": {"mode": {"not": {"enum": ["Automatic"]}}}}
                ]}}}
            ]}}}
        ]}));
    }
    None
}

/// Validate one manifest (as YAML text) against its CRD; returns the errors.
pub fn crd_errors(manifest: &Value) -> Vec<String> {
    let kind = manifest["kind"].as_str().expect("manifest has kind");
    let version = manifest["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let crd = load_crd(crd_file_for(kind));
    assert_eq!(crd["spec"]["names"]["kind"], kind);
    let group = manifest["apiVersion"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        crd["spec"]["group"], group,
        "apiVersion group does not match the CRD"
    );
    let schema = to_json_schema(&openapi_schema(&crd, version), kind);
    let validator = jsonschema::draft4::new(&schema).expect("translated CRD schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(manifest)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    errors.extend(check_cel_root(manifest));
    errors
}

/// The object-level CEL rules we know, evaluated on create (oldSelf absent).
pub fn check_cel_root(manifest: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if manifest["kind"] == "MachineOSConfig"
        && manifest["metadata"]["name"] != manifest["spec"]["machineConfigPool"]["name"]
    {
        errors.push("MachineOSConfig name must match the referenced MachineConfigPool name".into());
    }
    errors
}

pub fn assert_valid(manifest: &Value) {
    let errors = crd_errors(manifest);
    assert!(
        errors.is_empty(),
        "{} {} fails its CRD:\n{}",
        manifest["kind"],
        manifest["metadata"]["name"],
        errors.join("\n")
    );
}
