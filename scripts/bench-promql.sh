#!/usr/bin/env bash
# Benchmarks of the embedded metrics (not tests; see docs/benchmarks/promql.md for the figures):
#
#   scripts/bench-promql.sh               guardrail rounds + memory per sample, then scraping CPU
#   scripts/bench-promql.sh --prometheus  also the same guardrails against a real Prometheus 2.42
#                                         (promtool-built blocks), reported as a ratio
#
# Needs prometheus and promtool for --prometheus (scripts/test.sh --install).
set -euo pipefail
cd "$(dirname "$0")/.."

extra=()
[ "${1:-}" = "--prometheus" ] && extra=(--prometheus)

echo "== guardrails (crates/promql/benches/guardrails.rs)"
cargo bench -q -p canary-promql --bench guardrails -- "${extra[@]}"
echo
echo "== scraping (crates/providers/benches/scrape.rs), ${SCRAPE_BENCH_SECONDS:-30} s"
cargo bench -q -p canary-providers --bench scrape
