# Shared by the bench-*.sh scripts (sourced, not run). Sets $work (a temp dir removed on exit)
# and $pids (killed on exit), and defines:
#   require TOOL...   exit with the install hint if a tool is missing
#   free_port         a free TCP port on 127.0.0.1
#   wait_port PORT    wait until something listens on PORT, or show the logs in $work and exit
# $BENCH_NAME prefixes the messages.

require() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
      { echo "$BENCH_NAME: $tool is missing (scripts/test.sh --install)" >&2; exit 1; }
  done
}

work=$(mktemp -d)
pids=()
bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$BENCH_NAME: nothing listens on port $1; logs:" >&2
  tail -n 20 "$work"/*.log >&2 || true
  exit 1
}
