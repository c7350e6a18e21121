#!/bin/sh
# Installs the Debian packages facet needs that are missing (as root, or via
# sudo). Called by `make deps`, which `make run` and `make test` depend on.
set -e
PKGS="gcc clang libclang-rt-14-dev make libc6-dev luajit libluajit-5.1-dev lua-busted luarocks libopenblas-dev libopenblas0-openmp lua-cjson lua-argparse lua-filesystem python3-numpy zlib1g libjpeg62-turbo-dev libpng-dev dataset-fashion-mnist"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "facet: installing missing packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
