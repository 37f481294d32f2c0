#!/usr/bin/env bash
# Fault onset → traffic verified at 0 % through HAProxy, for the engine path and for the
# Alertmanager path separately, at the rehearsal's settings (time scale 60: 250 ms scrapes,
# 500 ms evaluations; Alertmanager's group_wait 1 s as `canary render alertmanager` writes it).
#
#   scripts/bench-rehearsal.sh [RUNS]      (default 5 per path)
#
# Each run stands the rehearsal up (scripts/rehearse.sh) with `rls-errors@20m` on the canary and
#   --guard engine   no alert rules: the engine's own evaluation acts;
#   --guard alerts   the engine evaluates every 10 runbook-minutes, the rules every 30 s: the
#                    alert through Alertmanager acts first.
# and prints one JSON line per run, then the median and the range per path.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo build --release --quiet -p canary -p canary-testkit --bin canary --bin rehearse
for guard in engine alerts; do
  for i in $(seq 1 "$runs"); do
    target/release/rehearse --canary target/release/canary --work "target/rehearsal-bench-$guard" \
      --fault rls-errors@20m --guard "$guard" 2>/dev/null | tail -1 | tee -a "$out" || true
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for guard in ("engine", "alerts"):
    r = [x for x in rows if x["guard"] == guard]
    if not r:
        continue
    v = [x["onset_to_verified_ms"] for x in r]
    d = [x["decision_to_verified_ms"] for x in r]
    acted = sorted({x["acted"] for x in r})
    print(f"{guard:7} n={len(r)} acted={'/'.join(acted)} onset→verified median {statistics.median(v):.0f} ms "
          f"(min {min(v)}, max {max(v)}); decision→verified median {statistics.median(d):.0f} ms")
PY
