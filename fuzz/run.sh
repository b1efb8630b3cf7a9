#!/usr/bin/env bash
# Fuzz layerboot's parsers with AFL++: fuzz/run.sh SECONDS [TARGET…]
#
# Builds the instrumented harness (cargo afl, stable Rust), then fuzzes each target in
# turn (all of them by default; `fuzz/run.sh 0 --list` lists them) for SECONDS, starting
# from the committed seeds in fuzz/corpus/TARGET, and prints executions, executions per
# second, crashes and hangs per target. With FUZZ_EXECS=N a target stops after N
# executions or SECONDS, whichever comes first. Findings are kept in fuzz/out/TARGET
# (crashes/, hangs/; replay one with `target/debug/layerboot-fuzz TARGET < FILE`).
# Exit status 1 when any target crashed or hung.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
  echo "usage: fuzz/run.sh SECONDS [TARGET…]" >&2
  exit 2
fi
seconds=$1
shift

export PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
# Built into the root's target/ by rustc-wrapper.sh (see there and fuzz/Cargo.toml):
# instrumented layerboot and harness over the root build's dependencies, linked with the
# AFL++ runtime object cargo-afl built.
afl_rt=$(ls "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-"$(rustc -vV | sed -n 's/^release: //p')"-*/afl.rs-*/afl-llvm/afl-compiler-rt.o 2>/dev/null | tail -1)
[[ -n $afl_rt ]] || { echo "no AFL++ runtime for this rustc: run .ci/install-deps (cargo afl config --build)" >&2; exit 1; }
# The root's lock file, so every dependency is the version the root build compiled (cargo
# adds the afl crate's few to this copy).
cp ../Cargo.lock Cargo.lock
AFL_COMPILER_RT=$afl_rt RUSTC_WRAPPER=$PWD/rustc-wrapper.sh \
  cargo build --quiet --target-dir ../target
harness=$PWD/../target/debug/layerboot-fuzz
if [[ ${1:-} == --list ]]; then
  "$harness" --list
  exit 0
fi
mapfile -t all < <("$harness" --list)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "unknown target '$t' (known: ${all[*]})" >&2; exit 2; }
done

# A shared CI or development machine: no CPU pinning, no cpufreq or core_pattern demands,
# no curses UI; quick calibration.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_FAST_CAL=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1
limit=()
[[ -n ${FUZZ_EXECS:-} ]] && limit=(-E "$FUZZ_EXECS")

field() { sed -n "s/^$1 *: *//p" "$2"; }
failed=0
printf '%-16s %12s %10s %9s %8s %6s\n' target execs execs/s seconds crashes hangs
for t in "${targets[@]}"; do
  out=out/$t
  rm -rf "$out"
  mkdir -p "$out"
  # -t: the ostree importer writes a repo per input; 2 s is far above any seed's time.
  cargo afl fuzz -i "corpus/$t" -o "$out" -V "$seconds" "${limit[@]}" -t 2000 \
    -- "$harness" "$t" >"$out/afl.log" 2>&1 || {
    echo "$t: afl-fuzz failed, see fuzz/$out/afl.log:" >&2
    tail -5 "$out/afl.log" >&2
    failed=1
    continue
  }
  s=$out/default/fuzzer_stats
  execs=$(field execs_done "$s")
  run=$(field run_time "$s")
  crashes=$(field saved_crashes "$s")
  hangs=$(field saved_hangs "$s")
  printf '%-16s %12s %10s %9s %8s %6s\n' "$t" "$execs" "$((execs / (run > 0 ? run : 1)))" "$run" "$crashes" "$hangs"
  if ((crashes > 0 || hangs > 0)); then
    failed=1
  fi
done
exit $failed
