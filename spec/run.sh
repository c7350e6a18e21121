#!/bin/sh
# Runs the C unit tests, then every busted spec under LuaJIT with the summary
# handler, whose last line is `N passed, N failed`. FACET_BUILD picks the
# build directory (build, or build-asan for `make sanitize`). Arguments, if any,
# are the spec files or directories to run instead of spec/ (sh spec/run.sh spec/bundle_spec.lua).
set -u
BUILD=${FACET_BUILD:-build}
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
if [ "${FACET_SANITIZE:-0}" = 1 ]; then
    # luajit itself is not instrumented: the sanitizer runtimes must load first
    LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
    export LD_PRELOAD
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export LSAN_OPTIONS=suppressions=$(pwd)/spec/support/lsan.supp:print_suppressions=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
fi
# the C programs: test_core (the API), test_cache_alloc (the caching device
# allocator over malloc) and test_fast_div (the CUDA kernels' 32-bit divisor,
# on the host), and in CUDA builds test_cublas_load and test_cublas_load_missing
# (cuBLAS opened on first use); their counts are summed, a program that stops
# early counts as one failure
: > "$counts"
progs="test_core test_cache_alloc test_fast_div"
for prog in test_cublas_load test_cublas_load_missing; do
    [ -x "$BUILD/$prog" ] && progs="$progs $prog"
done
for prog in $progs; do
    one=$(mktemp)
    "$BUILD/$prog" --counts "$one" | grep -v "^ok " || true
    read -r p f < "$one" || { echo "# $prog did not finish"; p=0; f=1; }
    rm -f "$one"
    read -r tp tf < "$counts" || { tp=0; tf=0; }
    echo "$((tp + p)) $((tf + f))" > "$counts"
done
if [ "${FACET_DEVICE:-cpu}" = cuda ]; then
    echo "FACET_DEVICE=cuda: device-generic specs run on the GPU and check against the same independent" \
         "values as on the CPU; where no CUDA device is available they are reported as skipped."
fi
if [ -n "${FACET_BUNDLE:-}" ]; then
    echo "luajit and busted from the bundle in $FACET_BUNDLE (build/bundle/env.sh)"
fi
[ $# -gt 0 ] || set -- spec
# module paths come from .busted (for $FACET_BUILD)
FACET_BUILD="$BUILD" FACET_CTEST_COUNTS="$counts" busted -o spec/support/summary.lua "$@"
rc=$?
c_failed=$(awk '{print $2}' "$counts" 2>/dev/null)
[ "${c_failed:-1}" = 0 ] || rc=1
exit $rc
