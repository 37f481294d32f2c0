#!/usr/bin/env bash
# Installs what the test suite needs (idempotent, quiet) and runs the whole suite.
#
#   scripts/test.sh            install + run every test
#   scripts/test.sh --install  install only
#
# Tests start their own Prometheus, Alertmanager, HAProxy, nginx, PostgreSQL, SMTP server and
# Chromium on loopback ports they pick; this script only makes sure the programs are present.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(prometheus prometheus-alertmanager haproxy socat nginx wrk hey chromium chromium-driver git postgresql)
# aiosmtpd: a real SMTP server for the email notifier; scipy: the reference for the statistics.
PY_PACKAGES=(aiosmtpd scipy)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages start services on a normal host; the tests run their own instances.
for svc in prometheus prometheus-alertmanager haproxy nginx postgresql; do
  command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null \
    && { systemctl stop "$svc" || true; }
done

for p in "${PY_PACKAGES[@]}"; do
  python3 -c "import $p" 2>/dev/null || python3 -m pip install -q "$p" >/dev/null
done

[ "${1:-}" = "--install" ] && exit 0

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast
else
  exec cargo test --workspace --no-fail-fast
fi
