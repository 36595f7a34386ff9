#!/usr/bin/env bash
# Create .venv/ in the checkout with podscribe and everything its tests need.
# System packages (ffmpeg for pydub, chromium for browser tests, espeak-ng for fixtures,
# postgresql for the PostgreSQL tests, which start a throwaway cluster, docker-compose to
# validate docker-compose.yml) are installed with apt when running as root and missing;
# without them podscribe still decodes audio with the ffmpeg binary of the imageio-ffmpeg
# wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
# webrtcvad (a dependency of resemblyzer, the speakers extra) has no wheel: it is compiled
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
# Debian keeps initdb off PATH, under /usr/lib/postgresql/<version>/bin.
{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || need_apt+=(postgresql)
# docker-compose.yml is checked with `docker-compose config` and its compose-spec schema.
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: optional system packages missing (${need_apt[*]}); install them for browser and PostgreSQL tests" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# constraints.txt holds the application's pins (torch first: any other torch spec pulls a
# multi-GB CUDA build on these machines).
"$VENV/bin/pip" install -q -c constraints.txt torch
"$VENV/bin/pip" install -q -c constraints.txt -e ".[dev,base]"
echo "setup: $VENV ready ($("$VENV/bin/python" --version))"
