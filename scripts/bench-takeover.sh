#!/usr/bin/env bash
# Time from a controller's death (kill -9) to the standby on "another machine" verifying the
# split again, with a real PostgreSQL as the shared state store and a 2 s lease.
#
#   scripts/bench-takeover.sh [RUNS]      (default 5) — prints one line per run and the median
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo nextest run -p canary --test shared_state --no-run >/dev/null 2>&1
figures=()
for i in $(seq 1 "$runs"); do
  line=$(cargo nextest run -p canary --test shared_state a_standby_takes_the_run_over_by_itself \
           --no-capture 2>&1 | grep '^TAKEOVER' || true)
  [ -n "$line" ] || { echo "run $i: no figure (test failed?)" >&2; continue; }
  echo "run $i: $line"
  figures+=("$(sed -E 's/.*standby: ([0-9]+) ms.*/\1/' <<<"$line")")
done
[ ${#figures[@]} -gt 0 ] || exit 1
printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print "median", a[int((NR+1)/2)], "ms; min", a[1], "max", a[NR], "over", NR, "runs"}'
