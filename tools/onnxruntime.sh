#!/bin/sh
# Installs onnxruntime-node (the ONNX runtime the export spec checks against)
# from the npm registry into build/onnxruntime (or $FACET_ONNXRUNTIME_DIR), once:
# a second call finds it there and downloads nothing. --ignore-scripts skips its
# post-install step, which would fetch a CUDA add-on; the CPU libraries come
# bundled in the package. Prints the directory that holds node_modules/.
set -e
VERSION=${FACET_ONNXRUNTIME_VERSION:-1.30.0}
DIR=${FACET_ONNXRUNTIME_DIR:-build/onnxruntime}
stamp="$DIR/node_modules/onnxruntime-node/package.json"
if [ -f "$stamp" ] && grep -q "\"version\": \"$VERSION\"" "$stamp"; then
    echo "$DIR"
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "tools/onnxruntime.sh: npm is not installed" >&2; exit 1; }
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || printf '{ "name": "facet-onnxruntime", "private": true }\n' > "$DIR/package.json"
npm install --prefix "$DIR" --ignore-scripts --no-audit --no-fund --no-save \
    --cache "$DIR/.npm-cache" "onnxruntime-node@$VERSION" >&2
echo "$DIR"
