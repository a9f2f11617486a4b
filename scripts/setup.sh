#!/usr/bin/env bash
# Installs everything Seminote Edge needs on a fresh Debian 12 machine (idempotent): system packages
# (NATS, fluidsynth + GM soundfonts, Chromium, systemd tools) and a virtualenv in .venv with the
# project and its dev tools. Run as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(nats-server fluidsynth fluid-soundfont-gm timgm6mb-soundfont csound-soundfont chromium python3-venv
              systemd libsndfile1 ffmpeg nghttp2-client)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: done ($(.venv/bin/python --version))"
