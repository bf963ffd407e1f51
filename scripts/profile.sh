#!/usr/bin/env bash
# Profiles the gateway child of a bench run with perf (Debian's linux-perf):
#   scripts/profile.sh OUT -- [bench arguments]
# e.g. scripts/profile.sh /tmp/unary1 -- --only "unary-1 " --unary-callers 512 --stall-secs 0
# Each gateway child the bench starts is recorded for 3 s, 2 s after it
# appears (OUT.N.data, in the order of the runs), and its samples split by
# where the time goes (scripts/perf_split.py). Needs the release binary
# (cargo build --release --locked), which carries debug info for this.
set -euo pipefail
out=$1
shift
[[ ${1:-} == -- ]] && shift
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/partner-events-gateway
command -v perf > /dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
"$bin" bench --out "$out.json" "$@" > "$out.bench.out" 2> "$out.bench.err" &
bench=$!
seen=" " n=0
while kill -0 "$bench" 2> /dev/null; do
  for pid in $(pgrep -P "$bench" -f "serve --config" || true); do
    [[ $seen == *" $pid "* ]] && continue
    seen="$seen$pid " n=$((n + 1))
    (sleep 2 && perf record -F 499 -g --call-graph dwarf,65528 -p "$pid" -o "$out.$n.data" -- sleep 3 > /dev/null 2>&1) &
  done
  sleep 0.2
done
wait
for data in "$out".*.data; do
  perf script -i "$data" -F comm,tid,ip,sym --no-inline 2> /dev/null > "${data%.data}.txt"
  echo "== $data"
  python3 "$here/scripts/perf_split.py" "${data%.data}.txt"
done
grep -E "gateway|baseline" "$out.bench.out" | head -20
