#!/usr/bin/env bash
# The production rehearsal: `canary run` (not the demo) against a production-like stack on
# loopback — relay-demo r0.5 and r1 behind a real HAProxy, a real Prometheus loading the run's
# alert rules, a real Alertmanager configured by `canary render alertmanager`, the Grafana
# stand-in — with `canary init`'s template edited as a team edits it and a .env.canary holding
# only the runbook's variables plus what `canary init` generated.
#
#   scripts/rehearse.sh                               healthy canary → PROMOTE (about a minute)
#   scripts/rehearse.sh --fault rls-errors@20m        RLS errors from 20 runbook-minutes → ROLLBACK
#   scripts/rehearse.sh --fault slow-ann              the ANN gate fails at the decision, no rollback
#   scripts/rehearse.sh --lb railway --channels       LB_PROVIDER=railway (a platform CLI stand-in),
#                                                     Slack/PagerDuty/email enabled as the template says
#   scripts/rehearse.sh --time-scale 1                the runbook's real 60 minutes
#   scripts/rehearse.sh --help                        every option
#
# Everything stays in target/rehearsal (canary.toml, .env.canary, logs/, canary-evidence/).
# Exit code: canary run's (0 PROMOTE, 3 ROLLBACK, 4 INCONCLUSIVE, 5 PROMOTION_FAILED, 1 error).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in prometheus prometheus-alertmanager haproxy socat hey python3; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "rehearse: $tool is missing (scripts/test.sh --install installs it)" >&2; exit 1; }
done
cargo build --release --quiet -p canary -p canary-testkit --bin canary --bin rehearse
exec target/release/rehearse --canary target/release/canary "$@"
