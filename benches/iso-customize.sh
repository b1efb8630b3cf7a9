#!/usr/bin/env bash
# Benchmark: `layerboot iso customize` vs `coreos-installer iso customize` on the same
# >= 1 GiB live ISO with the same inputs, in place and with -o, in one run. Prints the
# wall-time ratio (layerboot / coreos-installer, target <= 1.0) and peak RSS of both
# (from /usr/bin/time -v), and layerboot's peak RSS at two ISO sizes (memory must be flat).
#
#   benches/iso-customize.sh            # 1 GiB padding, 3 runs each
#   PAD_MIB=2048 RUNS=3 benches/iso-customize.sh
#
# Needs: a release build (made here), coreos-installer 0.27 (.ci/install-deps), the
# live ISO test fixture (built here through the test suite if absent).
set -euo pipefail
cd "$(dirname "$0")/.."

pad_mib=${PAD_MIB:-1024}
runs=${RUNS:-3}
lb=$PWD/target/release/layerboot
ci=$(command -v coreos-installer || echo "${CARGO_HOME:-$HOME/.cargo}/bin/coreos-installer")
"$ci" --version | grep -q '^coreos-installer 0\.27\.' || { echo "coreos-installer 0.27 not found: run .ci/install-deps" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: install the Debian package 'time'" >&2; exit 1; }

cargo build --release --locked --bin layerboot >&2

cache=${LAYERBOOT_TEST_CACHE:-/var/cache/layerboot-tests}
fixture=$(ls -t "$cache"/liveiso-*/live.iso 2>/dev/null | head -1 || true)
if [ -z "$fixture" ]; then
  echo "building the live ISO fixture (via the test suite)" >&2
  cargo test -q --locked --test iso_cli -- --exact pointer_pool_embeds_the_pools_pointer_config_as_destination >&2
  fixture=$(ls -t "$cache"/liveiso-*/live.iso | head -1)
fi

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/layerboot-iso-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# inputs (the same for both tools)
printf '%s\n' '{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/live-marker","contents":{"source":"data:,live-ok"},"mode":420}]}}' >"$work/live.ign"
printf '%s\n' '{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl0bGF5ZXJib290 bench"]}]}}' >"$work/dest.ign"
printf '[connection]\nid=eth0\ntype=ethernet\n\n[ipv4]\nmethod=auto\n' >"$work/eth0.nmconnection"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=bench \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
opts=(--force --live-ignition "$work/live.ign" --dest-ignition "$work/dest.ign" --dest-device /dev/sda
  --dest-karg-append nosmt --network-keyfile "$work/eth0.nmconnection" --ignition-ca "$work/ca.pem"
  --live-karg-append bench=1)

# the big ISO: the fixture's kernel and initramfs plus an incompressible rootfs.img
xorriso -osirrox on -indev "$fixture" -extract /images/pxeboot/vmlinuz "$work/vmlinuz" \
  -extract /images/pxeboot/initrd.img "$work/initrd.img" >/dev/null 2>&1
head -c "$((pad_mib << 20))" /dev/urandom >"$work/rootfs.img"
bash qemu-tests/fixtures/liveiso/build.sh "$work/big.iso" "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.img" 2>/dev/null
rm -f "$work/rootfs.img"
small=$work/small.iso
cp "$fixture" "$small"
big=$work/big.iso
echo "ISO sizes: big $(stat -c %s "$big") bytes, small $(stat -c %s "$small") bytes; $runs runs each" >&2

# run LABEL CMD...: wall seconds (date, ns) and peak RSS KiB (/usr/bin/time -v) -> "secs kib"
measure() {
  local log=$work/time.log t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$(awk "BEGIN {print $t1 - $t0}") $(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# one run of TOOL in MODE on ISO -> "secs kib"
once() {
  local mode=$1 iso=$2 tool=$3
  rm -f "$work/out.iso"
  if [ "$mode" = inplace ]; then
    measure "$tool" iso customize "${opts[@]}" "$work/inplace.iso"
  else
    measure "$tool" iso customize "${opts[@]}" -o "$work/out.iso" "$iso"
  fi
  rm -f "$work/out.iso"
  sync  # the next run does not inherit this one's writeback
}

# MODE ISO TOOL... : the tools take turns within each round, so drift in the machine's
# load and writeback hits them alike; prints "median_secs max_rss" per tool.
bench() {
  local mode=$1 iso=$2 tool r i
  shift 2
  declare -A secs rss
  cp "$iso" "$work/inplace.iso"
  sync
  cat "$iso" >/dev/null
  for ((i = 0; i < runs; i++)); do
    for tool in "$@"; do
      local bin=$tool
      [ "$tool" = lb ] && bin=$lb
      [ "$tool" = ci ] && bin=$ci
      r=$(once "$mode" "$iso" "$bin")
      secs[$tool]+="${r% *} "
      ((${r#* } > ${rss[$tool]:-0})) && rss[$tool]=${r#* }
    done
  done
  rm -f "$work/inplace.iso"
  for tool in "$@"; do
    echo "$tool $(printf '%s\n' ${secs[$tool]} | median) ${rss[$tool]}"
  done
}

printf '\n%-10s %-18s %10s %12s\n' mode tool "wall (s)" "peak RSS"
for mode in inplace output; do
  # Both tools rename -o output into place without an fsync (same durability).
  tools=(lb ci)
  declare -A S R
  while read -r t s r; do S[$t]=$s R[$t]=$r; done < <(bench "$mode" "$big" "${tools[@]}")
  for t in "${tools[@]}"; do
    printf '%-10s %-18s %10.3f %9d KiB\n' "$mode" "$t" "${S[$t]}" "${R[$t]}"
  done
  printf '%-10s %-18s %10.2fx %9.2fx\n' "$mode" "ratio lb/ci" "$(awk "BEGIN {print ${S[lb]} / ${S[ci]}}")" "$(awk "BEGIN {print ${R[lb]} / ${R[ci]}}")"
done

printf '\nlayerboot peak RSS by ISO size (-o):\n'
for iso in "$small" "$big"; do
  read -r _ s r < <(bench output "$iso" lb)
  printf '  %12d bytes: %6d KiB (%.3f s)\n' "$(stat -c %s "$iso")" "$r" "$s"
done
