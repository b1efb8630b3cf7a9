//! One AFL++ harness for every target: `layerboot-fuzz TARGET` (names in
//! `layerboot::fuzz_api::TARGETS`). Under afl-fuzz it runs in persistent mode; started by
//! hand it reads one input from stdin, which is how a crash is replayed. `--list` prints
//! the target names.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    if name == "--list" {
        for (n, _) in layerboot::fuzz_api::TARGETS {
            println!("{n}");
        }
        return;
    }
    let Some(&(_, target)) = layerboot::fuzz_api::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
    else {
        let names: Vec<&str> = layerboot::fuzz_api::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: layerboot-fuzz TARGET (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
