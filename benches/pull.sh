#!/usr/bin/env bash
# Pull benchmark: `layerboot pull` against `skopeo copy`, same loopback registry, same
# image, same run, both cold (fresh destination each time). Prints wall time, the
# ratio, and peak RSS (from /usr/bin/time -v) of both, plus layerboot's peak RSS at a
# second, smaller image size to show memory does not grow with the image.
#
#   benches/pull.sh                 # ~500 MiB, 8 layers, 3 rounds
#   SIZE_MIB=1000 ROUNDS=5 benches/pull.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-500}
SMALL_MIB=${SMALL_MIB:-100}
LAYERS=${LAYERS:-8}
ROUNDS=${ROUNDS:-3}

for tool in skopeo docker-registry /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run .ci/install-deps" >&2; exit 1; }
done

cargo build --release --bins --quiet
LB=target/release/layerboot
TK=target/release/layerboot-testkit

work=$(mktemp -d /var/tmp/layerboot-bench.XXXXXX)
srv=
cleanup() {
  if [[ -n $srv ]]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "making images: ${SIZE_MIB} MiB and ${SMALL_MIB} MiB, ${LAYERS} random layers each" >&2
"$TK" make-bench-image --size-mib "$SIZE_MIB" --layers "$LAYERS" --to "$work/big" >/dev/null
"$TK" make-bench-image --size-mib "$SMALL_MIB" --layers "$LAYERS" --to "$work/small" >/dev/null

"$TK" serve-registry --push "$work/big=bench/big:v1" --push "$work/small=bench/small:v1" --info-file "$work/info" 2>"$work/registry.log" &
srv=$!
for _ in $(seq 600); do [[ -s $work/info ]] && break; kill -0 "$srv" || { cat "$work/registry.log" >&2; exit 1; }; sleep 0.1; done
# shellcheck disable=SC1091
. "$work/info"
rm -rf "$work/big" "$work/small"   # the registry holds its own copy

# measure NAME CMD... -> prints "seconds kib" of one run
measure() {
  local name=$1; shift
  /usr/bin/time -v -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; wall = s }
    /Maximum resident set size/ { rss = $2 }
    END { printf "%.3f %d\n", wall, rss }' "$work/$name.time"
}

calc() { awk "BEGIN { print $* }"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

src="$ADDR/bench/big:v1"
: >"$work/lb.txt"; : >"$work/sk.txt"
for r in $(seq "$ROUNDS"); do
  rm -rf "$work/out-lb" "$work/out-sk"
  measure "lb$r" "$LB" pull "$src" --to "oci:$work/out-lb:v1" --tls-verify=false --quiet >>"$work/lb.txt"
  measure "sk$r" skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$src" "oci:$work/out-sk:v1" >>"$work/sk.txt"
done
rm -rf "$work/out-lb" "$work/out-sk"
measure lbsmall "$LB" pull "$ADDR/bench/small:v1" --to "oci:$work/out-small:v1" --tls-verify=false --quiet >"$work/lbsmall.txt"
rm -rf "$work/out-small"
# Warm: everything present, nothing fetched.
"$LB" pull "$src" --to "oci:$work/out-warm:v1" --tls-verify=false --quiet
measure lbwarm "$LB" pull "$src" --to "oci:$work/out-warm:v1" --tls-verify=false --quiet >"$work/lbwarm.txt"

lb_t=$(cut -d' ' -f1 "$work/lb.txt" | median); sk_t=$(cut -d' ' -f1 "$work/sk.txt" | median)
lb_m=$(cut -d' ' -f2 "$work/lb.txt" | sort -g | tail -1); sk_m=$(cut -d' ' -f2 "$work/sk.txt" | sort -g | tail -1)
read -r small_t small_m <"$work/lbsmall.txt"
read -r warm_t _ <"$work/lbwarm.txt"

echo
echo "pull of a ${SIZE_MIB} MiB, ${LAYERS}-layer image from a loopback registry (median of $ROUNDS cold runs)"
printf '  %-26s %8.2f s   peak RSS %6.1f MiB\n' "layerboot pull" "$lb_t" "$(calc "$lb_m / 1024")"
printf '  %-26s %8.2f s   peak RSS %6.1f MiB\n' "skopeo copy" "$sk_t" "$(calc "$sk_m / 1024")"
printf '  %-26s %8.2f x   (target <= 1.0)\n' "time ratio layerboot/skopeo" "$(calc "$lb_t / $sk_t")"
printf '  %-26s %8.2f s   peak RSS %6.1f MiB  (%s MiB image: flat memory)\n' "layerboot pull (small)" "$small_t" "$(calc "$small_m / 1024")" "$SMALL_MIB"
printf '  %-26s %8.2f s   (all blobs present)\n' "layerboot pull (again)" "$warm_t"
