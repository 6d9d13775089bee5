#!/usr/bin/env bash
# Makes sure a headless Chromium is installed: the integration tests open the HTML reports
# in it to check that its charts are drawn. Installs it with apt when it is missing.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing and apt-get is not available: install Chromium with your" \
         "package manager (a 'chromium' or 'chromium-browser' command on PATH), then rerun." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "Chromium is missing and installing it needs root: run" \
             "'apt-get install chromium' as root, then rerun." >&2
        exit 1
    fi
    SUDO=sudo
fi

echo "Installing Chromium (used by the integration tests to render the HTML reports)..."
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "apt-get installed the chromium package but no chromium command is on PATH." >&2
    exit 1
fi
