#!/usr/bin/env bash
# Benchmarks the embedded proxy (canary-proxy) against HAProxy, side by side in one run, and
# writes the figures to docs/benchmarks/proxy.md.
#
#   scripts/bench-proxy.sh                 # 10 s per wrk run, 64 connections
#   DURATION=30s CONNECTIONS=128 scripts/bench-proxy.sh
#   NICE=-10 scripts/bench-proxy.sh        # on a shared machine: run everything above other work
#
# Same two fixed backends for everything (one nginx, two servers answering a small static
# body), same split (5 % canary), keep-alive on both sides, two threads for each proxy, wrk
# with two threads. Each proxy runs twice: as it comes (the scheduler places its threads) and
# with its threads pinned one per CPU (HAProxy `cpu-map`, `canary proxy --pin-threads`). Each target is measured ROUNDS times, interleaved, and the median of each
# figure over the rounds is reported (the machine is shared: single runs are noisy). Then hey sends a fixed rate of half the embedded proxy's saturation
# throughput through each proxy and directly to the backend, for the added latency.
# A benchmark, not a test: it asserts nothing, it reports.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-5}
WEIGHT=5
OUT=${OUT:-docs/benchmarks/proxy.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Every process below inherits this priority, the proxies, the backends and the load
# generators alike, so the comparison stays fair while unrelated work is pushed back.
if [ -n "${NICE:-}" ]; then renice -n "$NICE" -p $$ >/dev/null; fi

BENCH_NAME=bench-proxy
. scripts/bench-common.sh
require wrk hey haproxy nginx python3

echo "bench-proxy: building the proxy (release)" >&2
cargo build --release -q -p canary
PROXY_BIN="$CARGO_TARGET_DIR/release/canary"


B_PORT=$(free_port); C_PORT=$(free_port)
H_PORT=$(free_port); HP_PORT=$(free_port); E_PORT=$(free_port); EP_PORT=$(free_port)
A_PORT=$(free_port); AP_PORT=$(free_port)
# The first two CPUs this script may use: where the pinned proxies put their two threads.
read -r CPU0 CPU1 < <(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(c[0], c[1 % len(c)])')

# Backends: one nginx worker, two servers, static answers, long keep-alive.
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $work/nginx/b; proxy_temp_path $work/nginx/p;
    fastcgi_temp_path $work/nginx/f; uwsgi_temp_path $work/nginx/u; scgi_temp_path $work/nginx/s;
    server { listen 127.0.0.1:$B_PORT; location / { return 200 "baseline\n"; } }
    server { listen 127.0.0.1:$C_PORT; location / { return 200 "canary\n"; } }
}
CONF
/usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g "daemon off; pid $work/nginx/nginx.pid; error_log stderr;" 2>"$work/nginx.log" &
pids+=($!)

# HAProxy, configured like the embedded proxy: 2 threads, 5/95 weights, keep-alive both ways.
# haproxy_config PORT [GLOBAL-LINE...]
haproxy_config() {
  local port=$1; shift
  printf 'global\n    nbthread 2\n    maxconn 4096\n'
  for line in "$@"; do printf '    %s\n' "$line"; done
  cat <<CONF
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$port
    default_backend app
backend app
    balance roundrobin
    server baseline 127.0.0.1:$B_PORT weight $((100 - WEIGHT))
    server canary 127.0.0.1:$C_PORT weight $WEIGHT
CONF
}
haproxy_config "$H_PORT" >"$work/haproxy.cfg"
haproxy_config "$HP_PORT" "cpu-map 1/1 $CPU0" "cpu-map 1/2 $CPU1" >"$work/haproxy-pinned.cfg"
for cfg in haproxy haproxy-pinned; do
  /usr/sbin/haproxy -db -f "$work/$cfg.cfg" 2>"$work/$cfg.log" &
  pids+=($!)
done

embedded() {
  local port=$1 admin=$2 log=$3; shift 3
  CANARY_PROXY_TOKEN=bench-token RUST_LOG=warn "$PROXY_BIN" proxy --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
    --baseline "http://127.0.0.1:$B_PORT" --canary "http://127.0.0.1:$C_PORT" --weight "$WEIGHT" --threads 2 "$@" \
    >"$work/$log.log" 2>&1 &
  pids+=($!)
}
embedded "$E_PORT" "$A_PORT" embedded
embedded "$EP_PORT" "$AP_PORT" embedded-pinned --pin-threads

for port in $B_PORT $C_PORT $H_PORT $HP_PORT $E_PORT $EP_PORT; do wait_port "$port"; done

declare -A URL=(
  [direct]="http://127.0.0.1:$B_PORT/"
  [haproxy]="http://127.0.0.1:$H_PORT/"
  [embedded]="http://127.0.0.1:$E_PORT/"
  [haproxy-pinned]="http://127.0.0.1:$HP_PORT/"
  [embedded-pinned]="http://127.0.0.1:$EP_PORT/"
)
TARGETS=(direct haproxy embedded haproxy-pinned embedded-pinned)
WRK_CMD="wrk -t2 -c$CONNECTIONS -d$DURATION --latency"

echo "bench-proxy: warming up" >&2
for target in "${TARGETS[@]}"; do wrk -t2 -c"$CONNECTIONS" -d2s "${URL[$target]}" >/dev/null; done

for round in $(seq 1 "$ROUNDS"); do
  for target in "${TARGETS[@]}"; do
    echo "bench-proxy: round $round: wrk → $target" >&2
    $WRK_CMD "${URL[$target]}" >"$work/wrk-$target-$round.txt"
  done
done

# Saturation of the embedded proxy (median round) sets the fixed rate for the latency runs.
SAT=$(python3 - "$work" "$ROUNDS" <<'PY'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rps = [float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/wrk-embedded-{r}.txt").read()).group(1)) for r in range(1, rounds + 1)]
print(int(statistics.median(rps)))
PY
)
HEY_WORKERS=64
RATE=$((SAT / 2))
PER_WORKER=$(( (RATE + HEY_WORKERS - 1) / HEY_WORKERS ))
HEY_CMD="hey -z $DURATION -c $HEY_WORKERS -q $PER_WORKER"
for target in "${TARGETS[@]}"; do
  echo "bench-proxy: hey at $RATE req/s → $target" >&2
  $HEY_CMD "${URL[$target]}" >"$work/hey-$target.txt"
done

# Confirm the split the embedded proxy served during the run.
curl -s -H "Authorization: Bearer bench-token" "http://127.0.0.1:$A_PORT/metrics" >"$work/metrics.txt" || true

python3 - "$work" "$ROUNDS" "$OUT" "$WRK_CMD" "$HEY_CMD" "$RATE" "$WEIGHT" "$CPU0" "$CPU1" <<'PY'
import datetime, os, platform, re, statistics, subprocess, sys
work, rounds, out, wrk_cmd, hey_cmd, rate, weight, cpu0, cpu1 = sys.argv[1:10]
rounds = int(rounds)
TARGETS = {
    "direct": "direct to backend",
    "haproxy": "HAProxy 2.6",
    "embedded": "embedded proxy",
    "haproxy-pinned": "HAProxy 2.6, pinned",
    "embedded-pinned": "embedded proxy, pinned",
}

def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "p50": pct["50"], "p99": pct["99"], "non2xx": int(errors.group(1)) if errors else 0,
            "socket": sock.group(1).strip() if sock else "none"}

def hey(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {p: float(v) * 1000 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", text)}
    return {"rps": rps, "p50": pct["50"], "p99": pct["99"]}

runs = {t: [wrk(f"{work}/wrk-{t}-{r}.txt") for r in range(1, rounds + 1)] for t in TARGETS}
median = {t: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "non2xx")} | {"socket": "; ".join(sorted({r["socket"] for r in rs}))} for t, rs in runs.items()}
lat = {t: hey(f"{work}/hey-{t}.txt") for t in TARGETS}

metrics = open(f"{work}/metrics.txt").read() if os.path.exists(f"{work}/metrics.txt") else ""
def served(arm):
    return sum(float(v) for v in re.findall(r'canary_proxy_requests_total\{arm="%s",code_class="\dxx"\} ([\d.e+]+)' % arm, metrics))
c, b = served("canary"), served("baseline")
share = f"{100 * c / (c + b):.2f} %" if c + b else "n/a"

def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception:
        return "unknown"

def verdicts(ours, theirs, label):
    e, h = median[ours], median[theirs]
    ratio_rps, ratio_p99 = e["rps"] / h["rps"], e["p99"] / h["p99"]
    return [
        f"**{label}:** throughput embedded / HAProxy = **{ratio_rps:.2f}×** (bar ≥ 0.80×: {'meets' if ratio_rps >= 0.8 else 'MISSES'}); "
        f"p99 = **{ratio_p99:.2f}×** (bar ≤ 1.25×: {'meets' if ratio_p99 <= 1.25 else 'MISSES'}); "
        f"p50 = {e['p50'] / h['p50']:.2f}×.",
        "",
    ]

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

lines = [
    "# Embedded proxy benchmark",
    "",
    f"Generated by `scripts/bench-proxy.sh` on {now}. Machine: {os.cpu_count()} cores ({cpu}), "
    f"{version(['haproxy', '-v'])}, {version(['nginx', '-v'])}, {version(['wrk', '-v'])}.",
    "",
    "Setup: one nginx worker serves both backends (static 9-byte and 7-byte bodies). HAProxy "
    f"(`nbthread 2`, `balance roundrobin`, weights {100 - int(weight)}/{weight}, `http-reuse always`) and the "
    f"embedded proxy (`--threads 2`, weight {weight}) split between them the same way; "
    "keep-alive on both sides. Each proxy runs twice: as it comes, its threads placed by the "
    f"scheduler, and pinned one thread per CPU (CPUs {cpu0} and {cpu1}: HAProxy `cpu-map 1/1 {cpu0}` and "
    f"`cpu-map 1/2 {cpu1}`, `canary proxy --pin-threads`). wrk and nginx run unpinned on the same cores as "
    "everything else, so absolute numbers are low and the ratios are what matter."
    + (f" Run at nice {os.environ['NICE']} (every process of the benchmark alike) because the machine was shared." if os.environ.get("NICE") else ""),
    "",
    "## Saturation (wrk)",
    "",
    f"Command: `{wrk_cmd} <url>`; {rounds} interleaved rounds per target; each figure is the median over the rounds.",
    "",
    "| target | requests/s | p50 | p99 | errors |",
    "|---|---:|---:|---:|---|",
]
for key, name in TARGETS.items():
    r = median[key]
    errs = f"non-2xx {r['non2xx']:.0f}, socket errors {r['socket']}"
    lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.3f} ms | {r['p99']:.3f} ms | {errs} |")
lines += [
    "",
    "All rounds (requests/s): " + "; ".join(f"{t} " + ", ".join(f"{r['rps']:,.0f}" for r in rs) for t, rs in runs.items()) + ".",
    "",
    "All rounds (p99): " + "; ".join(f"{t} " + ", ".join(f"{r['p99']:.1f} ms" for r in rs) for t, rs in runs.items()) + ".",
    "",
]
lines += verdicts("embedded", "haproxy", "As they come")
lines += verdicts("embedded-pinned", "haproxy-pinned", "Both pinned")
lines += [
    f"Canary share served by the (unpinned) embedded proxy during the run: {share} (weight {weight} %).",
    "",
    "## Added latency at 50 % of saturation (hey)",
    "",
    f"Command: `{hey_cmd} <url>` — a fixed {int(rate):,} requests/s, half the unpinned embedded proxy's saturation throughput.",
    "",
    "| target | achieved requests/s | p50 | p99 | added p50 over direct | added p99 over direct |",
    "|---|---:|---:|---:|---:|---:|",
]
for key, name in TARGETS.items():
    r = lat[key]
    add50 = r["p50"] - lat["direct"]["p50"]
    add99 = r["p99"] - lat["direct"]["p99"]
    lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50']:.3f} ms | {r['p99']:.3f} ms | {add50:+.3f} ms | {add99:+.3f} ms |")
lines += [
    "",
    "hey reports latency in 0.1 ms steps; differences below that are noise.",
    "",
]
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
echo "bench-proxy: wrote $OUT" >&2
