#!/usr/bin/env bash
# System packages some tests use: headless Chromium (report rendering), redis-server (the S004
# jobs server starts its own), and cloud-init's schema (user-data validation, unpacked into
# build/ — never installed system-wide).
# Installs only what is missing; needs root for apt. Without root it says what is missing and
# the tests that need it skip (CI sets ECHOSWARM_REQUIRE_SYSDEPS=1 so they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # unit checks (infra)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)  # python -m servers jobs

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "sysdeps: installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "sysdeps: missing ${need_apt[*]} (not root; dependent tests will skip)" >&2
  fi
fi

# cloud-init's schema, from Debian's package, unpacked (not installed) into build/cloud-init.
if [ ! -d build/cloud-init/usr/lib/python3/dist-packages/cloudinit ]; then
  if command -v apt-get >/dev/null 2>&1; then
    mkdir -p build/cloud-init-deb
    ( cd build/cloud-init-deb && { apt-get download cloud-init >/dev/null 2>&1 \
        || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get download cloud-init >/dev/null; }; } ) \
      && dpkg-deb -x build/cloud-init-deb/cloud-init_*.deb build/cloud-init \
      || echo "sysdeps: could not fetch cloud-init's package (user-data schema test will skip)" >&2
  fi
fi
exit 0
