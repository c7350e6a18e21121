#!/bin/sh
# tools/gpu_check.sh [--no-device] OUTDIR   (`make gpu-check OUT=OUTDIR`)
# The GPU check of a host with an NVIDIA GPU, in one run of at most 9 minutes:
#   1. builds the core into build-gpu/ for the GPU's architecture only
#      (NVCCFLAGS="-O3 -arch=sm_XY", XY from nvidia-smi's compute_cap), with
#      MPI when mpicc is on the PATH (the bundle's Open MPI) and NCCL from the
#      CUDA toolkit or, failing that, from the Python wheel nvidia-nccl
#      (NCCL_HOME set to a folder of links in build-gpu/nccl),
#   2. checks that facet sees the device (facet.cuda.device_count() > 0),
#   3. runs the C unit tests, then every spec file with FACET_DEVICE=cuda,
#      one busted process per file (spec/backend_ops_spec.lua first when it
#      exists), with CUDA_LAUNCH_BLOCKING=1 so a bad kernel fails where it is,
#      then facet.dist's collectives on GPU tensors through NCCL at world size
#      1 (mpirun -np 1 spec/support/nccl_check.lua cuda: NCCL refuses two ranks
#      on one GPU; the dry run runs the same checks on 2 CPU ranks over MPI),
#   4. runs the benchmarks (heads at K = 72,690 and 1,000,000, data, train_step for
#      MobileFaceNet and IResNet-50 in fp32, fp16 and bf16, then conv and any
#      other taking --device; see step 4),
# each step under `timeout`, and writes OUTDIR/summary.txt (per spec file
# passed/failed/skipped, totals, the benchmarks' figures) and OUTDIR/logs/*.log.
# Exit status: 0 all passed, 1 anything failed, 2 no GPU here (one line, no work).
# --no-device or FACET_GPU_CHECK_DRY=1: the same pipeline on the CPU (no GPU
# needed): the CUDA cases of the specs are reported as skipped and the benchmarks
# are listed, not run. Where no GPU tells the architecture, the dry run builds
# for sm_90 when nvcc is there (FACET_GPU_ARCH=sm_XY picks another, in both modes).
# FACET_GPU_CHECK_BUDGET (540 s) bounds the whole run; steps past it are not run
# and count as failures. On a host without LuaJIT and busted, source the bundle
# first (make bundle on a Debian 12 machine; see README, "GPU host").
# For a rerun that targets what failed (the build in build-gpu/ is kept when
# the flags are the same):
#   FACET_GPU_CHECK_STEPS   which steps of 3-5 run, comma-separated, from
#                           specs,collectives,benches,sanitize
#                           (default specs,collectives,benches)
#   FACET_GPU_CHECK_SPECS   the spec files of step 3b (default: every one)
#   FACET_GPU_CHECK_BENCHES the benchmarks of step 4, by log name (e.g.
#                           "train_step_iresnet50 heads_K72690"; default: all)
#   sanitize (step 5)       spec/backend_ops_spec.lua (or FACET_GPU_CHECK_SPECS)
#                           under compute-sanitizer's memcheck: out-of-bounds
#                           and misaligned accesses, leaks, in every CUDA op
set -u
cd "$(dirname "$0")/.." || exit 1

dry=${FACET_GPU_CHECK_DRY:-0}
out=""
for a in "$@"; do
    case $a in
        --no-device|--dry-run) dry=1 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $a" >&2; exit 1 ;;
        *) out=$a ;;
    esac
done
[ "$dry" = 0 ] || dry=1
if [ -z "$out" ]; then
    echo "usage: tools/gpu_check.sh [--no-device] OUTDIR" >&2
    exit 1
fi

steps=${FACET_GPU_CHECK_STEPS:-specs,collectives,benches}
for st in $(echo "$steps" | tr ',' ' '); do
    case $st in
        specs|collectives|benches|sanitize) ;;
        *) echo "gpu_check: FACET_GPU_CHECK_STEPS: unknown step '$st' (known: specs, collectives, benches, sanitize)" >&2
           exit 1 ;;
    esac
done
want() { case ",$steps," in *",$1,"*) return 0 ;; esac; return 1; }
for f in ${FACET_GPU_CHECK_SPECS:-}; do
    if [ ! -f "$f" ]; then
        echo "gpu_check: FACET_GPU_CHECK_SPECS: no spec file $f" >&2
        exit 1
    fi
done

# 0. is there a GPU? (before any work: one line and exit 2 when there is none)
caps=""
gpu_names=""
if [ $dry = 0 ]; then
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "gpu_check: no GPU on this host (nvidia-smi not found); --no-device or FACET_GPU_CHECK_DRY=1 runs the checks on the CPU" >&2
        exit 2
    fi
    caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' ' | grep -E '^[0-9]+\.[0-9]+$')
    if [ -z "$caps" ]; then
        echo "gpu_check: no GPU on this host (nvidia-smi lists none: $(nvidia-smi -L 2>&1 | head -n 1))" >&2
        exit 2
    fi
    gpu_names=$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null)
fi

mkdir -p "$out/logs" || exit 1
out=$(cd "$out" && pwd)
logs=$out/logs
rm -f "$logs"/*.log
summary=$out/summary.txt
body=$out/.summary.body
: >"$body"
note() { printf '%s\n' "$*" | tee -a "$body"; }

start=$(date +%s)
budget=${FACET_GPU_CHECK_BUDGET:-540}
elapsed() { echo $(( $(date +%s) - start )); }
# the timeout of a step: its own limit, or what is left of the budget
limit() {
    left=$(( budget - $(elapsed) ))
    if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
failures=""
fail() { failures="$failures
  $*"; }

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    PATH="$PATH:/usr/local/cuda/bin"
    export PATH
fi
for tool in luajit busted cc make timeout; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "gpu_check: $tool is not on the PATH (a host without LuaJIT/busted: . build/bundle/env.sh first)" >&2
        exit 1
    fi
done

BUILD=build-gpu
flags=""
# FACET_GPU_ARCH (sm_XY) overrides; otherwise each distinct compute capability
arch=${FACET_GPU_ARCH:-}
if [ -z "$arch" ] && [ -n "$caps" ]; then
    arch=$(echo "$caps" | sed 's/\.//' | sort -u | sed 's/^/sm_/' | tr '\n' ' ' | sed 's/ $//')
fi
[ -z "$arch" ] && [ $dry = 1 ] && arch=sm_90
if ! command -v nvcc >/dev/null 2>&1; then
    if [ $dry = 0 ]; then
        echo "gpu_check: nvcc not found (install the CUDA toolkit or put its bin/ on the PATH)" >&2
        exit 1
    fi
    makevars="FACET_CUDA=0"
    arch="none (no nvcc: CPU-only build)"
else
    set -- $arch
    if [ $# = 1 ]; then
        flags="-O3 -arch=$1"
    else
        flags="-O3"
        for a in "$@"; do flags="$flags -gencode arch=compute_${a#sm_},code=$a"; done
    fi
    makevars="FACET_CUDA=1"
fi

# NCCL: the CUDA toolkit's when it has nccl.h, else the Python wheel's
# (nvidia-nccl-cu*: include/nccl.h and lib/libnccl.so.2 but no libnccl.so to
# link with -lnccl, hence the folder of links, made after the stamp check below)
nccl_py=""
nccl_note="none (CUDA tensors' collectives will fail: built without NCCL)"
if [ "$makevars" = FACET_CUDA=1 ]; then
    cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
    if [ -n "${NCCL_HOME:-}" ]; then
        nccl_note="$NCCL_HOME (NCCL_HOME)"
    elif [ -f "$cuda_home/include/nccl.h" ]; then
        nccl_note="$cuda_home (the CUDA toolkit)"
    else
        # the folder holding include/nccl.h and lib/libnccl.so.2 under the wheels' nvidia/ package
        nccl_py=$(${FACET_PYTHON:-python3} -c '
import os, nvidia
for base in nvidia.__path__:
    for top, dirs, files in os.walk(base):
        if os.path.isfile(os.path.join(top, "include", "nccl.h")) and \
           os.path.isfile(os.path.join(top, "lib", "libnccl.so.2")):
            print(top)
            raise SystemExit
' 2>/dev/null)
        if [ -n "$nccl_py" ] && [ -f "$nccl_py/include/nccl.h" ] && [ -f "$nccl_py/lib/libnccl.so.2" ]; then
            nccl_note="$nccl_py (the Python wheel, through $BUILD/nccl)"
        else
            nccl_py=""
        fi
    fi
fi
mpi_note="none (mpicc not on the PATH: built without MPI)"
if command -v mpicc >/dev/null 2>&1; then
    mpi_note="$(command -v mpicc), mpirun $(command -v mpirun 2>/dev/null || echo 'not found')"
    ver=$(mpirun --version 2>/dev/null | head -n 1)
    [ -n "$ver" ] && mpi_note="$mpi_note ($ver)"
fi

{
    echo "facet GPU check, $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n)"
    if [ $dry = 1 ]; then
        echo "mode: DRY RUN (--no-device): no GPU used; CUDA cases are reported as skipped, benchmarks are listed, not run"
    else
        echo "mode: device"
        echo "$gpu_names" | sed 's/^/GPU: /'
    fi
    command -v nvcc >/dev/null 2>&1 && echo "nvcc: $(nvcc --version | sed -n 's/.*release \([^,]*\),.*/\1/p')"
    echo "luajit: $(command -v luajit)${FACET_BUNDLE:+ (bundle $FACET_BUNDLE)}"
    echo "MPI: $mpi_note"
    [ "$makevars" = FACET_CUDA=1 ] && echo "NCCL: $nccl_note"
} >"$out/.summary.head"
cat "$out/.summary.head"

# 1. build for this architecture only (a stamp keeps build-gpu/ in step with the flags)
jobs=$(nproc 2>/dev/null || echo 2)
t0=$(date +%s)
stamp="$makevars${flags:+ NVCCFLAGS=$flags}"
[ "$(cat "$BUILD/.gpu_check_flags" 2>/dev/null)" = "$stamp" ] || rm -rf "$BUILD"
mkdir -p "$BUILD" && echo "$stamp" >"$BUILD/.gpu_check_flags"
if [ -n "$nccl_py" ]; then
    rm -rf "$BUILD/nccl"
    mkdir -p "$BUILD/nccl/lib"
    ln -s "$nccl_py/include" "$BUILD/nccl/include"
    ln -s "$nccl_py/lib/libnccl.so.2" "$BUILD/nccl/lib/libnccl.so.2"
    ln -s "$nccl_py/lib/libnccl.so.2" "$BUILD/nccl/lib/libnccl.so"
    NCCL_HOME=$(pwd)/$BUILD/nccl
    export NCCL_HOME
fi
if [ "$makevars" = FACET_CUDA=1 ]; then
    timeout -k 10 "$(limit 400)" make -j"$jobs" BUILD=$BUILD FACET_CUDA=1 NVCCFLAGS="$flags" build $BUILD/test_core \
        $BUILD/test_cublas_load $BUILD/test_cublas_load_missing >"$logs/build.log" 2>&1
    rc=$?
    what="make BUILD=$BUILD NVCCFLAGS=\"$flags\" ($arch)"
else
    timeout -k 10 "$(limit 400)" make -j"$jobs" BUILD=$BUILD FACET_CUDA=0 build $BUILD/test_core >"$logs/build.log" 2>&1
    rc=$?
    what="make BUILD=$BUILD FACET_CUDA=0"
fi
if [ $rc = 0 ]; then
    note "build: $what: ok ($(( $(date +%s) - t0 )) s)"
else
    note "build: $what: FAILED (rc $rc, logs/build.log)"
    tail -n 30 "$logs/build.log"
    fail "build (logs/build.log)"
fi

# 2. does facet load, and see the device?
if [ $rc = 0 ]; then
    probe=$(FACET_BUILD=$BUILD timeout -k 5 60 luajit -e "
        package.path = './lua/?.lua;./lua/?/init.lua;./$BUILD/lua/?.lua;' .. package.path
        package.cpath = './$BUILD/?.so;' .. package.cpath
        local facet = require 'facet'
        local d = facet.dist.built()
        io.write(tostring(facet.cuda.built()), ' ', facet.cuda.device_count(), ' ', facet.blas_core(), ' ',
          tostring(d.mpi), ' ', tostring(d.nccl), '\n')" 2>&1)
    echo "$probe" >"$logs/device.log"
    set -- $probe
    if [ $# -ne 5 ]; then
        note "facet: cannot load the build: $(echo "$probe" | head -n 1)"
        fail "facet does not load (logs/device.log)"
        rc=1
    else
        note "facet: CUDA built: $1, CUDA devices: $2, OpenBLAS core: $3, MPI built: $4, NCCL built: $5"
        if [ $dry = 0 ] && ! [ "$2" -ge 1 ] 2>/dev/null; then
            note "facet sees no CUDA device although nvidia-smi lists one: nothing else is run"
            fail "nvidia-smi lists a GPU but facet.cuda.device_count() is $2 (logs/device.log)"
            rc=1
        fi
    fi
    [ $dry = 0 ] && nvidia-smi >"$logs/nvidia-smi.log" 2>&1
fi
built=$rc   # 0: built, loads, and (unless dry) sees the GPU: the tests can run

# Open MPI on a lent VM (spec/dist_spec.lua's ranks, step 3c): no binding to
# cores (hwloc may not see a VM's topology) and no single-copy shared memory
# (process_vm_readv can be refused in containers); both only cost speed
OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}
OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_hwloc_base_binding_policy OMPI_MCA_btl_vader_single_copy_mechanism

export CUDA_LAUNCH_BLOCKING=1
# the specs' Python references (NumPy, torch, onnx): the host's python3 when
# Debian's /usr/bin/python3 is not there (spec/support/files.lua, F.PY)
if [ -z "${FACET_PYTHON:-}" ] && [ ! -x /usr/bin/python3 ] && command -v python3 >/dev/null 2>&1; then
    FACET_PYTHON=$(command -v python3)
    export FACET_PYTHON
fi

# 3a. the C unit tests
if [ $built = 0 ]; then
    counts=$out/.ctest_counts
    rm -f "$counts"
    t0=$(date +%s)
    timeout -k 10 "$(limit 120)" "$BUILD/test_core" --counts "$counts" >"$logs/test_core.log" 2>&1
    rc=$?
    cp=$(awk '{print $1}' "$counts" 2>/dev/null)
    cf=$(awk '{print $2}' "$counts" 2>/dev/null)
    secs=$(( $(date +%s) - t0 ))
    if [ -n "$cp" ] && [ -n "$cf" ]; then
        note "C unit tests: $cp passed, $cf failed ($secs s)"
        [ "$cf" = 0 ] && [ $rc = 0 ] || fail "C unit tests (logs/test_core.log)"
    else
        note "C unit tests: did not finish (rc $rc, $secs s)"
        fail "C unit tests did not finish, rc $rc (logs/test_core.log)"
    fi
    # cuBLAS opened on first use (core/cuda/cublas_load.cu): here with a GPU, a handle is made
    for prog in test_cublas_load test_cublas_load_missing; do
        [ -x "$BUILD/$prog" ] || continue
        rm -f "$counts"
        timeout -k 10 "$(limit 60)" "$BUILD/$prog" --counts "$counts" >"$logs/$prog.log" 2>&1
        rc=$?
        cp=$(awk '{print $1}' "$counts" 2>/dev/null)
        cf=$(awk '{print $2}' "$counts" 2>/dev/null)
        note "$prog: ${cp:-?} passed, ${cf:-?} failed"
        [ "$cf" = 0 ] && [ $rc = 0 ] || fail "$prog (logs/$prog.log)"
    done
fi

# 3b. every spec file with FACET_DEVICE=cuda, one process each
specs=""
[ -f spec/backend_ops_spec.lua ] && specs="spec/backend_ops_spec.lua"
for f in spec/*_spec.lua; do
    [ "$f" = spec/backend_ops_spec.lua ] || specs="$specs $f"
done
[ -n "${FACET_GPU_CHECK_SPECS:-}" ] && specs=$FACET_GPU_CHECK_SPECS
tp=0; tf=0; ts=0; nfiles=0; badfiles=0
if [ $built = 0 ] && ! want specs; then
    note ""
    note "specs: not run (FACET_GPU_CHECK_STEPS=$steps)"
elif [ $built = 0 ]; then
    note ""
    note "specs: FACET_DEVICE=cuda CUDA_LAUNCH_BLOCKING=1 FACET_BUILD=$BUILD busted -o spec/support/summary.lua FILE"
    [ -f spec/backend_ops_spec.lua ] || note "(spec/backend_ops_spec.lua does not exist yet)"
    note "$(printf '%-36s %7s %7s %8s %6s  %s' file passed failed skipped secs status)"
    for f in $specs; do
        name=$(basename "$f" .lua)
        log=$logs/$name.log
        nfiles=$((nfiles + 1))
        t=$(limit 180)
        if [ "$t" -le 5 ]; then
            note "$(printf '%-36s %7s %7s %8s %6s  %s' "$f" - - - 0 "NOT RUN (time budget)")"
            badfiles=$((badfiles + 1)); fail "$f not run: time budget"
            continue
        fi
        t0=$(date +%s)
        FACET_DEVICE=cuda FACET_BUILD=$BUILD timeout -k 10 "$t" busted -o spec/support/summary.lua "$f" >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - t0 ))
        res=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
        sk=$(grep -E '^[0-9]+ skipped$' "$log" | tail -n 1 | cut -d' ' -f1)
        if [ -n "$res" ]; then
            p=${res%% *}; fl=$(echo "$res" | sed 's/.*, \([0-9]*\) failed/\1/')
            status=ok
            [ "$fl" != 0 ] && status=FAILED
            [ "$fl" = 0 ] && [ $rc != 0 ] && { status="FAILED (rc $rc)"; fl=1; }
        else
            p=0; fl=1; sk=${sk:-0}
            case $rc in
                124|137) status="TIMEOUT after ${t} s" ;;
                *) status="CRASHED (rc $rc, no summary)" ;;
            esac
        fi
        sk=${sk:-0}
        tp=$((tp + p)); tf=$((tf + fl)); ts=$((ts + sk))
        if [ "$status" != ok ]; then
            badfiles=$((badfiles + 1))
            fail "$f: $status (logs/$name.log)"
        fi
        note "$(printf '%-36s %7s %7s %8s %6s  %s' "$f" "$p" "$fl" "$sk" "$secs" "$status")"
    done
    note "specs total: $tp passed, $tf failed, $ts skipped in $nfiles files ($badfiles files with failures)"
fi
unset CUDA_LAUNCH_BLOCKING

# 3c. facet.dist's collectives through NCCL: one rank (NCCL refuses two ranks
# on one GPU), GPU tensors, hand-computed values (spec/support/nccl_check.lua);
# the dry run runs the same checks on 2 CPU ranks through MPI
if [ $built = 0 ] && ! want collectives; then
    note ""
    note "collectives: not run (FACET_GPU_CHECK_STEPS=$steps)"
elif [ $built = 0 ]; then
    if [ $dry = 1 ]; then np=2; ndev=cpu; else np=1; ndev=cuda; fi
    cmd="mpirun -np $np luajit bin/facet run spec/support/nccl_check.lua $ndev"
    t=$(limit 120)
    note ""
    if ! command -v mpirun >/dev/null 2>&1; then
        note "collectives ($cmd): NOT RUN: mpirun is not on the PATH (the bundle carries Open MPI: . build/bundle/env.sh)"
        fail "collectives not run: no mpirun"
    elif [ "$t" -le 5 ]; then
        note "collectives ($cmd): NOT RUN (time budget)"
        fail "collectives not run: time budget"
    else
        t0=$(date +%s)
        FACET_BUILD=$BUILD timeout -k 10 "$t" mpirun --allow-run-as-root --oversubscribe -np $np \
            luajit bin/facet run spec/support/nccl_check.lua $ndev </dev/null >"$logs/collectives.log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - t0 ))
        res=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$logs/collectives.log" | head -n 1)
        why=$(grep '^cannot run: ' "$logs/collectives.log" | head -n 1)
        if [ $rc = 0 ] && [ -n "$res" ]; then
            note "collectives ($cmd): $res ($secs s)"
        else
            case $rc in 124|137) res="TIMEOUT after $t s" ;; esac
            note "collectives ($cmd): FAILED (rc $rc, $secs s${res:+: $res}${why:+: $why}; logs/collectives.log)"
            grep '^FAIL ' "$logs/collectives.log" | head -n 5 | sed 's/^/  /' | tee -a "$body"
            fail "collectives: rc $rc (logs/collectives.log)"
        fi
    fi
fi

# 4. benchmarks (figures, not pass/fail; a crash or timeout is a failure), in
# this order (the quick ones first), each "log name, time limit in seconds (less
# when the budget has less left), command under bench/"; then the other
# bench/*.lua files that take --device (common.device(parser)), with
# "--device cuda" and 60 s. The
# lines a bench starts with "summary:" go into the summary (all its output when
# it prints none; those printed before a failure too); the whole output is in
# logs/bench_NAME.log. The training-step benches run fp32, fp16 and bf16 in
# turn (facet.train's mixed precision; the PyTorch figure is PyTorch AMP) and
# print each 16-bit precision over facet's own fp32; each precision times 10
# steps after 3 warm-up steps, and --profile 1 adds 11 profiled steps.
# Expected on one H100: about 3 to 4 minutes for all of them (docs/gpu.md).
benches=""
add_bench() {
    [ -f "bench/${3%% *}" ] || return 0
    if [ -n "${FACET_GPU_CHECK_BENCHES:-}" ]; then
        case " $FACET_GPU_CHECK_BENCHES " in *" $1 "*) ;; *) return 0 ;; esac
    fi
    benches="${benches:+$benches|}$1 $2 $3"
}
add_bench heads_K72690 60 "heads.lua --device cuda --K 72690 --torch 1"
add_bench heads_K1000000 90 "heads.lua --device cuda --K 1000000 --torch 1"
add_bench heads_subcenters3 45 "heads.lua --device cuda --K 72690 --subcenters 3 --heads arc,am --train 0 --torch 1"
add_bench data 60 "data.lua --device cuda --warmup 3 --steps 10"
add_bench train_step_mobilefacenet 120 "train_step.lua --device cuda --models mobilefacenet --precision fp32,fp16,bf16 --batch 128 --size 112 --warmup 3 --steps 10 --profile 1"
add_bench train_step_iresnet50 200 "train_step.lua --device cuda --models iresnet50 --precision fp32,fp16,bf16 --batch 128 --size 112 --warmup 3 --steps 10 --profile 1"
# PyTorch's own default runs cuDNN convolutions in TF32: both sides with TF32 on
add_bench train_step_iresnet50_tf32 90 "train_step.lua --device cuda --models iresnet50 --precision fp32 --tf32 1 --batch 128 --size 112 --warmup 3 --steps 10"
for b in bench/*.lua; do
    n=$(basename "$b")
    case $n in heads.lua|train_step.lua|data.lua) continue ;; esac
    # a bench takes --device when it declares it through bench/lib/common.lua
    # (the word alone also appears in benches without the option)
    grep -q 'common.device(' "$b" || continue
    add_bench "${n%.lua}" 60 "$n --device cuda"
done
note ""
note "benchmarks:"
if ! want benches; then
    note "  not run (FACET_GPU_CHECK_STEPS=$steps)"
elif [ -z "$benches" ]; then
    note "  (none of bench/*.lua takes --device)"
elif [ $built != 0 ]; then
    note "  not run (see above)"
else
    IFS_SAVE=$IFS
    IFS='|'
    set -- $benches
    IFS=$IFS_SAVE
    for entry in "$@"; do
        name=${entry%% *}
        rest=${entry#* }
        lim=${rest%% *}
        cmd=${rest#* }
        if [ $dry = 1 ]; then
            note "  SKIPPED (dry run, no GPU; limit $lim s): luajit bin/facet run bench/$cmd"
            continue
        fi
        t=$(limit "$lim")
        log=$logs/bench_$name.log
        err=$logs/bench_$name.err.log
        if [ "$t" -le 5 ]; then
            note "  NOT RUN (time budget): bench/$cmd"
            fail "bench/$cmd not run: time budget"
            continue
        fi
        t0=$(date +%s)
        # shellcheck disable=SC2086
        FACET_BUILD=$BUILD timeout -k 10 "$t" luajit bin/facet run bench/$cmd </dev/null >"$log" 2>"$err"
        rc=$?
        secs=$(( $(date +%s) - t0 ))
        case $rc in
            0) note "  == bench/$cmd ($secs s)" ;;
            124|137) note "  == bench/$cmd: TIMEOUT after $t s (logs/bench_$name.log, logs/bench_$name.err.log)" ;;
            *) note "  == bench/$cmd: FAILED (rc $rc, $secs s; logs/bench_$name.log, logs/bench_$name.err.log)" ;;
        esac
        # the key figures (those printed before a failure too), or the whole output
        if grep -q '^summary: ' "$log"; then
            grep '^summary: ' "$log" | sed 's/^summary: /  /' | tee -a "$body"
        elif [ $rc = 0 ]; then
            grep -v '^[[:space:]]*$' "$log" | sed 's/^/  /' | tee -a "$body"
        fi
        if [ $rc != 0 ]; then
            head -n 2 "$err" | sed 's/^/  /' | tee -a "$body"
            fail "bench/$cmd: rc $rc (logs/bench_$name.err.log)"
        fi
    done
fi

# 5. (FACET_GPU_CHECK_STEPS with sanitize) the CUDA ops under compute-sanitizer's
# memcheck: every access of every kernel checked (slow: small shapes only)
if want sanitize; then
    note ""
    san_specs=${FACET_GPU_CHECK_SPECS:-spec/backend_ops_spec.lua}
    if [ $built != 0 ]; then
        note "sanitize: not run (see above)"
    elif [ $dry = 1 ]; then
        note "sanitize: SKIPPED (dry run, no GPU): compute-sanitizer --tool memcheck busted $san_specs"
    elif ! command -v compute-sanitizer >/dev/null 2>&1; then
        note "sanitize: NOT RUN: compute-sanitizer is not on the PATH"
        fail "sanitize not run: no compute-sanitizer"
    else
        for f in $san_specs; do
            name=$(basename "$f" .lua)
            log=$logs/sanitize_$name.log
            t=$(limit 300)
            if [ "$t" -le 5 ]; then
                note "sanitize $f: NOT RUN (time budget)"
                fail "sanitize $f not run: time budget"
                continue
            fi
            t0=$(date +%s)
            FACET_DEVICE=cuda FACET_BUILD=$BUILD timeout -k 10 "$t" compute-sanitizer --tool memcheck \
                --target-processes all --error-exitcode 9 --print-limit 50 \
                busted -o spec/support/summary.lua "$f" >"$log" 2>&1
            rc=$?
            secs=$(( $(date +%s) - t0 ))
            errs=$(grep -E 'ERROR SUMMARY: [0-9]+ error' "$log" | tail -n 1)
            res=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
            case $rc in
                0) note "sanitize $f: clean ($secs s; ${res:-no summary}; ${errs:-no error summary})" ;;
                124|137) note "sanitize $f: TIMEOUT after $t s (logs/sanitize_$name.log)"
                         fail "sanitize $f: timeout" ;;
                *) note "sanitize $f: rc $rc ($secs s; ${errs:-no error summary}; logs/sanitize_$name.log)"
                   grep -E '^========= (Invalid|Misaligned|Address|Program hit|  at )' "$log" | head -n 12 \
                       | sed 's/^/  /' | tee -a "$body"
                   fail "sanitize $f: rc $rc (logs/sanitize_$name.log)" ;;
            esac
        done
    fi
fi

total=$(elapsed)
{
    cat "$out/.summary.head"
    echo ""
    cat "$body"
    echo ""
    echo "total time: $total s"
    if [ -z "$failures" ]; then
        echo "RESULT: PASS"
    else
        echo "RESULT: FAIL$failures"
    fi
} >"$summary"
rm -f "$out/.summary.head" "$body" "$out/.ctest_counts"
echo ""
echo "total time: $total s; summary: $summary"
if [ -z "$failures" ]; then
    echo "RESULT: PASS"
    exit 0
fi
echo "RESULT: FAIL$failures"
exit 1
