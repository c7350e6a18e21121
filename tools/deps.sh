#!/bin/sh
# Installs the Debian packages facet needs that are missing (as root, or via
# sudo). Called by `make deps`, which `make run` and `make test` depend on.
# It does nothing where the build and test tools are already there (luajit,
# busted, cc, jpeglib.h and png.h) and packages cannot be installed: with the
# bundle of tools/bundle.sh sourced (FACET_BUNDLE), without apt, or when the
# installation fails (no network); there it says so and lets make go on.
set -e
PKGS="gcc clang libclang-rt-14-dev make libc6-dev luajit libluajit-5.1-dev lua-busted luarocks libopenblas-dev libopenblas0-openmp lua-cjson lua-argparse lua-filesystem python3-numpy python3-onnx libedit2 chromium zlib1g libjpeg62-turbo-dev libpng-dev dataset-fashion-mnist"

# what the build and `make test` need, wherever it comes from
tools_found() {
    for t in luajit busted cc; do command -v $t >/dev/null 2>&1 || return 1; done
    printf '#include <stdio.h>\n#include <jpeglib.h>\n#include <png.h>\n' | cc -E -x c - >/dev/null 2>&1
}

if [ -n "${FACET_BUNDLE:-}" ] && tools_found; then
    exit 0   # the bundle's env.sh is sourced: nothing to install on this host
fi
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    tools_found && exit 0
    echo "facet: no apt on this machine and luajit, busted, cc, jpeglib.h or png.h is missing;" \
         "install them, or build the bundle (make bundle) on Debian 12 and source build/bundle/env.sh" >&2
    exit 1
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm installs onnxruntime-node for the ONNX spec; a Node.js from elsewhere
# (NodeSource's package bundles npm) is fine
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
echo "facet: installing missing packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing; }; then
    if tools_found; then
        echo "facet: could not install$missing (no network?); going on with the luajit, busted and cc found" >&2
        exit 0
    fi
    exit 1
fi
