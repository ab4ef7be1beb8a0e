#!/bin/sh
# Checks the system libraries Hubside needs and installs the missing ones on Debian/Ubuntu when run as
# root; otherwise says exactly what to install. Usage: sysdeps.sh core|gui|bench
#   core:  what the tests need (Qt offscreen, a C++ compiler for llama-cpp-python, python3 venv)
#   gui:   core plus Qt's xcb platform libraries, for a real window
#   bench: core plus aria2 (bench/downloads.py's multi-connection anchor; never needed by the tests)
set -eu
mode=${1:-core}

# library file -> Debian package
core_libs="libGL.so.1:libgl1 libEGL.so.1:libegl1 libOpenGL.so.0:libopengl0 libfontconfig.so.1:libfontconfig1
libxkbcommon.so.0:libxkbcommon0 libglib-2.0.so.0:GLIB libdbus-1.so.3:libdbus-1-3"
gui_libs="libxcb-cursor.so.0:libxcb-cursor0 libxkbcommon-x11.so.0:libxkbcommon-x11-0
libxcb-icccm.so.4:libxcb-icccm4 libxcb-image.so.0:libxcb-image0 libxcb-keysyms.so.1:libxcb-keysyms1
libxcb-randr.so.0:libxcb-randr0 libxcb-render-util.so.0:libxcb-render-util0
libxcb-shape.so.0:libxcb-shape0 libxcb-xkb.so.1:libxcb-xkb1 libX11-xcb.so.1:libx11-xcb1"
libs=$core_libs
[ "$mode" = gui ] && libs="$core_libs $gui_libs"

missing=""
have_lib() { ldconfig -p 2>/dev/null | grep -q " $1 " || ldconfig -p 2>/dev/null | grep -q "^	$1 "; }
for entry in $libs; do
    have_lib "${entry%%:*}" || missing="$missing ${entry#*:}"
done
command -v c++ >/dev/null 2>&1 || missing="$missing build-essential"
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
[ "$mode" = bench ] && { command -v aria2c >/dev/null 2>&1 || missing="$missing aria2"; }
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "Hubside needs these system packages (Debian names):$missing" >&2
    echo "Install their equivalents with your package manager, then run make again." >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "Hubside needs these system packages:$missing" >&2
    echo "Install them with:  sudo apt-get install -y$missing" | sed 's/GLIB/libglib2.0-0/' >&2
    exit 1
fi
echo "Installing system packages:$missing"
apt-get update -qq
# Debian 13 and Ubuntu 24.04 renamed glib's package for the 64-bit time_t transition.
glib=libglib2.0-0
apt-cache show libglib2.0-0t64 >/dev/null 2>&1 && glib=libglib2.0-0t64
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(echo "$missing" | sed "s/GLIB/$glib/")
