#!/bin/sh
# Install Hubside's menu entry, icons, AppStream metadata and hubside:// link handler for the current user.
# The `hubside` command must be on PATH (the venv's bin, or dist/hubside linked into ~/.local/bin).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data="${XDG_DATA_HOME:-$HOME/.local/share}"
mkdir -p "$data/applications" "$data/metainfo" "$data/icons/hicolor/scalable/apps"
install -m 644 "$here/hubside.desktop" "$data/applications/hubside.desktop"
install -m 644 "$here/io.github.hubside.Hubside.metainfo.xml" "$data/metainfo/"
install -m 644 "$here/../app/resources/hubside.svg" "$data/icons/hicolor/scalable/apps/hubside.svg"
for size in 16 32 48 64 128 256 512; do
    mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
    install -m 644 "$here/../app/resources/hubside-$size.png" "$data/icons/hicolor/${size}x${size}/apps/hubside.png"
done
if command -v update-desktop-database >/dev/null 2>&1; then update-desktop-database "$data/applications" || true; fi
if command -v xdg-mime >/dev/null 2>&1; then xdg-mime default hubside.desktop x-scheme-handler/hubside || true; fi
echo "Installed the Hubside menu entry, icons and hubside:// links under $data"
