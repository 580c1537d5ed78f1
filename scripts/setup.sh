#!/usr/bin/env bash
# Installs what Stepwise needs on Debian/Ubuntu and is sourced by the other
# scripts: Mesa's EGL and llvmpipe (OpenGL 4.3 compute with no GPU and no X
# server), the GL/EGL/X11 headers for the cgo builds, and the Go modules.
# Packages that are already present are left alone; apt-get runs through sudo
# when not root.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Runtime: EGL + Mesa's software rasteriser. Build: headers for go-gl (GL, EGL)
# and GLFW (the X11 fallback). tmux runs the studio's end-to-end test.
apt_packages=(
  gcc pkg-config git ca-certificates
  libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1
  libegl-dev libgl-dev
  libx11-dev libxrandr-dev libxinerama-dev libxcursor-dev libxi-dev libxxf86vm-dev
  tmux
)
# A script that sources this one may ask for more (./scripts/test: glslang-tools).
apt_packages+=(${stepwise_extra_packages[@]+"${stepwise_extra_packages[@]}"})

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "stepwise setup: missing Debian packages: ${missing[*]}; install them as root (apt-get install ...) and run this again" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  echo "stepwise setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Go: the module needs the version named in go.mod.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "stepwise setup: Go is not installed. Install Go $(awk '/^go /{print $2}' "$repo/go.mod") or newer from https://go.dev/dl/ (or your distribution's golang package if recent enough) and run this again." >&2
  exit 1
fi
export PATH="$(go env GOPATH)/bin:$PATH"

cd "$repo"
go mod download
