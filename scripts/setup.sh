#!/usr/bin/env bash
# Installs every system package autosnap needs on Debian 12 (bookworm), or,
# given package names, those (the end-to-end scripts' Slurm, nftables, ...).
# Quiet and idempotent: packages already installed are skipped.
#
#   scripts/setup.sh [PACKAGE...]
set -euo pipefail

packages=("$@")
[ $# -gt 0 ] || packages=(
  g++ cmake make ccache
  libtorch-dev python3-torch python3-numpy
  libboost-dev libboost-filesystem-dev
  libyaml-cpp-dev libgtest-dev libgmock-dev libdeflate-dev
  libgloo-dev
  libxxhash-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  clang libclang-rt-14-dev
  fiu-utils libfiu-dev
  util-linux procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
