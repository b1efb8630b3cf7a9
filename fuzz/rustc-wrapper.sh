#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (fuzz/run.sh): AFL++ coverage instrumentation (the
# flags `cargo afl build` adds, plugin-less variant) for layerboot and the harness only.
# Dependencies stay uninstrumented and are the very artifacts the root `cargo build`
# made, so the harness builds in minutes instead of a full instrumented rebuild; the
# coverage AFL++ sees is layerboot's own code.
rustc=$1
shift
extra=()
case " $* " in
*" --crate-name layerboot "* | *" --crate-name layerboot_fuzz "*)
  extra=(
    -C passes=sancov-module
    -C llvm-args=-sanitizer-coverage-level=3
    -C llvm-args=-sanitizer-coverage-trace-pc-guard
    -C llvm-args=-sanitizer-coverage-prune-blocks=0
    -C llvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
  )
  ;;
esac
case " $* " in
*" --crate-name layerboot_fuzz "*) extra+=(-C "link-arg=$AFL_COMPILER_RT") ;;
esac
exec "$rustc" "$@" "${extra[@]}"
