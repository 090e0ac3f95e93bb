#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver (chromedriver), used by the web page
# test (`cargo test -p server --test web_page`). Idempotent: silent when both are present.
# Needs root (or sudo) and apt-get.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser.sh: apt-get not found; install Chromium and chromedriver with your package manager" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_browser.sh: run as root (or install sudo) to install chromium and chromium-driver" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# A font, so that screenshots show text on minimal images.
install() { $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null; }

echo "installing chromium and chromium-driver (apt-get)..." >&2
if ! install 2>/dev/null; then
  # The package lists may be missing or stale: refresh them once and retry.
  $SUDO apt-get update -qq >/dev/null
  install
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "installed: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | head -n1)" >&2
