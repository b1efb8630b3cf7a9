//! The fuzz targets in the normal test suite: every committed seed (`fuzz/corpus/TARGET/`)
//! and every input a fuzzer found a bug with (`fuzz/regressions/TARGET/`, each fixed since)
//! runs through its target in `layerboot::fuzz_api`, which must return normally.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use layerboot::fuzz_api::TARGETS;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Inputs of `target` under `fuzz/KIND/TARGET`, each run; the failures by file.
fn run_all(kind: &str, target: &str, f: fn(&[u8])) -> (usize, Vec<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let inputs = files(&dir);
    let mut failures = Vec::new();
    for p in &inputs {
        let data = std::fs::read(p).unwrap();
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: panicked: {msg}", p.display()));
        }
    }
    (inputs.len(), failures)
}

#[test]
fn every_target_has_seeds_and_none_panics() {
    let mut failures = Vec::new();
    for (name, f) in TARGETS {
        let (n, mut fail) = run_all("corpus", name, *f);
        assert!(n > 0, "fuzz/corpus/{name}/ has no seeds");
        failures.append(&mut fail);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_input_a_fuzzer_crashed_on_is_fixed() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, f) in TARGETS {
        let (n, mut fail) = run_all("regressions", name, *f);
        total += n;
        failures.append(&mut fail);
    }
    assert!(total > 0, "fuzz/regressions/ holds no inputs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A panicking target is caught and reported (so the tests above can fail).
#[test]
fn a_panicking_target_is_reported() {
    fn boom(_: &[u8]) {
        panic!("boom");
    }
    let (n, failures) = run_all("corpus", "imageref", boom);
    assert!(n > 0);
    assert_eq!(failures.len(), n);
    assert!(failures[0].contains("panicked: boom"), "{failures:?}");
}
