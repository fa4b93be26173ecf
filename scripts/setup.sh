#!/usr/bin/env bash
# One-step set-up on Debian 12 with Node 20 (as root, or with sudo for the Debian packages):
# pnpm, a C compiler and iproute2, the workspace's packages, then the build (TypeScript and the C
# workloads under workloads/bin). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null | cut -d. -f1)" -lt 11 ]; then
  echo "setup: installing pnpm 12"
  npm install -g pnpm@12.4.2 >/dev/null 2>&1
fi

export npm_config_nodedir=/usr  # node-gyp, should any package need a build (it must not be set in .npmrc)
pnpm install --frozen-lockfile
pnpm build
echo "setup: done (npx forecopy-source --help, npx forecopy-dest --help)"
