#!/bin/sh
# tools/bundle.sh (`make bundle`): the Debian packages facet needs on a GPU host
# that has only the CUDA toolkit, gcc and Python (no network, no LuaJIT, no
# busted, no -dev packages), unpacked into one prefix that travels with the
# checkout:
#   build/bundle/debs/   the .deb files (apt-get download)
#   build/bundle/root/   all of them unpacked with dpkg-deb -x
#   build/bundle/env.sh  `. build/bundle/env.sh` puts the prefix on PATH,
#                        LUA_PATH/LUA_CPATH (and LUA_INIT), LD_LIBRARY_PATH,
#                        C_INCLUDE_PATH/LIBRARY_PATH and FACET_BLAS_LIB, and
#                        relocates Open MPI (OPAL_PREFIX, OPAL_SYSCONFDIR,
#                        PMIX_PREFIX): mpirun, mpicc (the build's FACET_MPI)
#                        and libmpi come from the bundle
#   build/bundle/MANIFEST  the packages with their versions and sizes
# After sourcing env.sh, `make test` and tools/gpu_check.sh work there.
# Not carried (every host with gcc has them): glibc, libgomp, libgcc, libstdc++,
# zlib; every ELF file of the bundle is checked to need nothing else from the host.
# Options: --refresh downloads every package again. BUNDLE_DIR (build/bundle).
# Exit status: 0 built, 3 the packages cannot be downloaded (no network or no
# apt), 1 anything else.
set -eu
cd "$(dirname "$0")/.."

BUNDLE_DIR=${BUNDLE_DIR:-build/bundle}
ARCH=x86_64-linux-gnu
# luajit is linked statically against libluajit (libluajit-5.1-2 is not needed);
# libluajit-5.1-common holds the jit.* modules (-jv, -jdump, -jp), libluajit-5.1-dev
# the lua.h that luarocks insists on (spec/install_spec.lua installs the rock).
PKGS="luajit libluajit-5.1-common libluajit-5.1-dev
lua-busted lua-cliargs lua-dkjson lua-filesystem lua-luassert lua-mediator lua-penlight lua-say lua-system lua-term
lua-cjson lua-argparse luarocks
libopenblas0-openmp libgfortran5 libquadmath0
libjpeg62-turbo libjpeg62-turbo-dev libpng16-16 libpng-dev
openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libpmix2 libevent-core-2.1-7 libevent-pthreads-2.1-7
libhwloc15 libudev1 libmunge2 libnl-3-200"
# Open MPI 4.1 (mpirun for facet.dist's ranks, mpicc and mpi.h for the build):
# libopenmpi3's other dependencies are the network fabrics' libraries
# (libfabric, UCX, InfiniBand verbs, PSM); their plugins are removed below
# instead (Debian's openmpi-mca-params.conf disables most of them anyway), so a
# single host runs over shared memory and TCP. libhwloc-plugins is optional.
# lua-cliargs also depends on lua-inifile and lua-yaml: it loads them only for
# .ini/.yaml configuration files, which busted never asks for.

refresh=0
for a in "$@"; do
    case $a in
        --refresh) refresh=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bundle.sh: unknown argument $a" >&2; exit 1 ;;
    esac
done

for tool in apt-get dpkg-deb; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "bundle.sh: $tool is missing: build the bundle on a Debian 12 machine" >&2
        exit 3
    fi
done

debs=$BUNDLE_DIR/debs
root=$BUNDLE_DIR/root
mkdir -p "$debs"
[ $refresh = 1 ] && rm -f "$debs"/*.deb

# as root, apt's download sandbox user (_apt) could not write here
APT_OPTS=""
[ "$(id -u)" -eq 0 ] && APT_OPTS="-o APT::Sandbox::User=root"

have() { ls "$debs/$1"_*.deb >/dev/null 2>&1; }
download() {
    # shellcheck disable=SC2086
    (cd "$debs" && apt-get download -q $APT_OPTS "$@") >"$BUNDLE_DIR/download.log" 2>&1
}
need=""
for p in $PKGS; do have "$p" || need="$need $p"; done
if [ -n "$need" ]; then
    echo "bundle.sh: downloading$need"
    # shellcheck disable=SC2086
    if ! download $need; then
        if grep -qi "temporary failure resolving\|could not resolve\|could not connect\|unreachable\|timed out" \
            "$BUNDLE_DIR/download.log"; then
            cat "$BUNDLE_DIR/download.log" >&2
            echo "bundle.sh: cannot download the packages (no network?)" >&2
            exit 3
        fi
        # a fresh machine may have no package lists yet
        SUDO=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
        $SUDO apt-get update -qq >>"$BUNDLE_DIR/download.log" 2>&1 || true
        # shellcheck disable=SC2086
        if ! download $need; then
            cat "$BUNDLE_DIR/download.log" >&2
            echo "bundle.sh: cannot download the packages (no network or no apt sources?)" >&2
            exit 3
        fi
    fi
fi

rm -rf "$root"
mkdir -p "$root"
: >"$BUNDLE_DIR/MANIFEST.tmp"
for p in $PKGS; do
    deb=$(ls "$debs/$p"_*.deb | tail -n 1)
    dpkg-deb -x "$deb" "$root"
    printf '%-26s %-44s %6d KiB\n' "$p" "$(dpkg-deb -f "$deb" Version)" $(( $(wc -c <"$deb") / 1024 )) \
        >>"$BUNDLE_DIR/MANIFEST.tmp"
done

# packages that still install into /lib (libnl): into usr/lib, where LD_LIBRARY_PATH points
if [ -d "$root/lib" ]; then
    cp -a "$root/lib/." "$root/usr/lib/"
    rm -rf "${root:?}/lib"
fi

# what a test host never reads: documentation, static libraries, other Lua versions
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/share/zsh" \
       "$root/usr/share/lua/5.2" "$root/usr/share/lua/5.3" "$root/usr/share/lua/5.4" \
       "$root/usr/lib/$ARCH/lua/5.2" "$root/usr/lib/$ARCH/lua/5.3" "$root/usr/lib/$ARCH/lua/5.4" \
       "$root/usr/lib/$ARCH/pkgconfig" "$root/usr/bin/libpng-config" "$root/usr/bin/libpng16-config"
rm -f "$root/usr/lib/$ARCH"/*.a "$root/usr/lib/$ARCH"/liblua5.[234]-* "$root/usr/lib/$ARCH/libluajit-5.1.so"
# facet loads OpenBLAS by path: the reference BLAS / LAPACK names beside it are not needed
rm -f "$root/usr/lib/$ARCH/openblas-openmp/libblas.so.3" "$root/usr/lib/$ARCH/openblas-openmp/liblapack.so.3"

# Open MPI: the plugins of the fabrics whose libraries are not carried, and the
# Fortran, Java, C++ and OpenSHMEM parts (facet uses MPI from C)
ompi=$root/usr/lib/$ARCH/openmpi
rm -f "$ompi"/lib/openmpi3/mca_*_ofi.so "$ompi"/lib/openmpi3/mca_*_ucx.so "$ompi"/lib/openmpi3/mca_btl_uct.so \
      "$ompi"/lib/openmpi3/mca_btl_openib.so "$ompi"/lib/openmpi3/mca_mtl_psm*.so \
      "$ompi"/lib/openmpi3/mca_spml_*.so "$ompi"/lib/openmpi3/mca_sshmem_*.so "$ompi"/lib/openmpi3/mca_memheap_*.so \
      "$ompi"/lib/openmpi3/mca_scoll_*.so "$ompi"/lib/openmpi3/mca_atomic_*.so \
      "$root/usr/lib/$ARCH"/libmca_common_ofi.so* "$root/usr/lib/$ARCH"/libmca_common_ucx.so* \
      "$root/usr/lib/$ARCH"/libmca_common_verbs.so* "$ompi"/lib/libmca_common_ofi.so \
      "$ompi"/lib/libmca_common_ucx.so "$ompi"/lib/libmca_common_verbs.so \
      "$root/usr/lib/$ARCH"/libmpi_mpifh* "$root/usr/lib/$ARCH"/libmpi_usempi* "$root/usr/lib/$ARCH"/libmpi_java* \
      "$root/usr/lib/$ARCH"/libmpi_cxx* "$root/usr/lib/$ARCH"/liboshmem* \
      "$ompi"/lib/libmpi_mpifh* "$ompi"/lib/libmpi_usempi* "$ompi"/lib/libmpi_java* "$ompi"/lib/libmpi_cxx* \
      "$ompi"/lib/liboshmem* "$ompi"/lib/*.mod \
      "$ompi"/include/*.mod "$ompi"/include/mpif*.h "$ompi"/include/shmem* "$ompi"/include/pshmem*
# mpi.h needs none of the internal headers (for plugins) under include/openmpi
rm -rf "$ompi"/include/openshmem "$ompi"/include/mpp "$root/usr/lib/$ARCH/fortran" "$ompi"/include/openmpi/*
for b in "$root"/usr/bin/mpif* "$root"/usr/bin/mpijavac* "$root"/usr/bin/osh* "$root"/usr/bin/shmem* \
         "$root"/usr/bin/mpic++* "$root"/usr/bin/mpicxx* "$root"/usr/bin/mpiCC* "$root"/usr/bin/opalc++ \
         "$root"/usr/bin/ortecc; do
    rm -f "$b"
done
# the names update-alternatives would make (openmpi-bin's postinst)
ln -sfn orterun "$root/usr/bin/mpirun"
ln -sfn orterun "$root/usr/bin/mpiexec"
ln -sfn opal_wrapper "$root/usr/bin/mpicc"
[ -x "$root/usr/bin/orterun" ] && [ -e "$root/usr/share/openmpi/mpicc-wrapper-data.txt" ] ||
    { echo "bundle.sh: Open MPI's orterun or mpicc-wrapper-data.txt is missing" >&2; exit 1; }

# absolute symlinks would point at the host's /usr: make them relative
find "$root" -type l | while read -r link; do
    target=$(readlink "$link")
    case $target in
        /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$root$target")" "$link" ;;
    esac
done

# Debian's busted starts with `#!/usr/bin/env lua` (any Lua 5.x): run it under
# the bundled LuaJIT, which is also what .busted's `lua = "luajit"` re-executes
cat >"$root/usr/bin/busted" <<'EOF'
#!/usr/bin/env luajit
-- Busted command-line runner (Debian's lua-busted, run under LuaJIT by facet's bundle)
require 'busted.runner'({ standalone = false })
EOF
chmod 755 "$root/usr/bin/busted"
# luarocks (spec/install_spec.lua installs the rock) starts with `#!/usr/bin/env lua-any`
sed -i '1s|.*|#!/usr/bin/env luajit|' "$root/usr/bin/luarocks"
rm -f "$root"/usr/bin/luarocks-5.[234] "$root"/usr/bin/luarocks-admin-5.[234] "$root"/etc/luarocks/config-5.[234].lua
# env.sh points LUAROCKS_SYSCONFDIR here: the rockspec's external dependencies
# (jpeglib.h, png.h, libopenblas) are looked up in the bundle first, lua.h is LuaJIT's
cat >>"$root/etc/luarocks/config-5.1.lua" <<'EOF2'
-- facet's bundle (tools/bundle.sh): its prefix first for external dependencies
local bundle = os_getenv("FACET_BUNDLE")
if bundle then
  external_deps_dirs = { bundle .. "/root/usr", "/usr/local", "/usr", "/" }
  variables = { LUA_INCDIR = bundle .. "/root/usr/include/luajit-2.1" }
end
EOF2
# the link name of the -dev package, for luarocks' OPENBLAS check
ln -s openblas-openmp/libopenblas.so.0 "$root/usr/lib/$ARCH/libopenblas.so"

blas=usr/lib/$ARCH/openblas-openmp/libopenblas.so.0
[ -e "$root/$blas" ] || { echo "bundle.sh: $blas is missing from libopenblas0-openmp" >&2; exit 1; }

# the newest glibc symbol version the bundle's binaries need
glibc="unknown"
if command -v objdump >/dev/null 2>&1; then
    glibc=$(find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec objdump -T {} + 2>/dev/null |
        grep -o 'GLIBC_2\.[0-9]*' | sed 's/GLIBC_//' | sort -t. -k2,2n -u | tail -n 1)
fi

glibc_minor=$(echo "$glibc" | sed -n 's/^2\.\([0-9]*\)$/\1/p')
[ -n "$glibc_minor" ] || glibc_minor=0

cat >"$BUNDLE_DIR/env.sh" <<EOF
# facet's bundle (written by tools/bundle.sh): source it, \`. build/bundle/env.sh\`,
# from bash, zsh or (from the checkout's root) any POSIX sh. Every path is found
# from this file's own location, so the checkout can be copied anywhere.
# Needs glibc >= $glibc, gcc (libgomp) and zlib on the host.
_fb=""
if [ -n "\${BASH_SOURCE:-}" ]; then
    _fb=\$(cd "\$(dirname "\${BASH_SOURCE}")" && pwd -P)
elif [ -n "\${ZSH_VERSION:-}" ]; then
    eval '_fb=\${\${(%):-%x}:A:h}'
elif [ -f ./env.sh ] && [ -d ./root/usr/bin ]; then
    _fb=\$(pwd -P)
elif [ -f ./build/bundle/env.sh ]; then
    _fb=\$(cd ./build/bundle && pwd -P)
fi
if [ -z "\$_fb" ] || [ ! -x "\$_fb/root/usr/bin/luajit" ]; then
    echo "env.sh: cannot find the bundle: source it with bash, or from the checkout's root (. build/bundle/env.sh)" >&2
    unset _fb
    return 1 2>/dev/null || exit 1
fi
FACET_BUNDLE=\$_fb
_fr=\$_fb/root
_fl=\$_fr/usr/lib/$ARCH
PATH="\$_fr/usr/bin:\$PATH"
# the bundle's Lua modules before LuaJIT's defaults (;;)
LUA_PATH="./?.lua;\$_fr/usr/share/lua/5.1/?.lua;\$_fr/usr/share/lua/5.1/?/init.lua;\$_fr/usr/share/luajit-2.1.0-beta3/?.lua;;"
LUA_CPATH="./?.so;\$_fl/lua/5.1/?.so;;"
# a process that sets LUA_PATH/LUA_CPATH itself still finds the bundle after its own paths
LUA_INIT="local r, p = [[\$_fr]], package
if not p.path:find(r, 1, true) then p.path = p.path .. ';' .. r .. '/usr/share/lua/5.1/?.lua;' .. r .. '/usr/share/lua/5.1/?/init.lua' end
if not p.cpath:find(r, 1, true) then p.cpath = p.cpath .. ';' .. r .. '/usr/lib/$ARCH/lua/5.1/?.so' end"
# libjpeg, libpng, libgfortran, libquadmath; OpenBLAS is loaded by path (its
# directory also holds libblas.so.3 and liblapack.so.3, which would shadow the host's)
LD_LIBRARY_PATH="\$_fl\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
FACET_BLAS_LIB="\$_fl/openblas-openmp/libopenblas.so.0"
# Open MPI 4.1 relocated: OPAL_PREFIX moves its plugins, help files and the
# wrapper compiler's data; its configuration directory (/etc/openmpi) and
# PMIx's directories are absolute in Debian's build and are named one by one.
# libmpi itself comes from LD_LIBRARY_PATH, which the runpath that mpicc's -L
# gives facet_core.so (DT_RUNPATH, not DT_RPATH) comes after.
OPAL_PREFIX="\$_fr/usr"
OPAL_SYSCONFDIR="\$_fr/etc/openmpi"
PMIX_PREFIX="\$_fl/pmix2"
PMIX_LIBDIR="\$_fl/pmix2/lib"
PMIX_DATADIR="\$_fl/pmix2/share"
# jpeglib.h, png.h and the libjpeg.so / libpng.so link names for the build
C_INCLUDE_PATH="\$_fr/usr/include:\$_fr/usr/include/$ARCH\${C_INCLUDE_PATH:+:\$C_INCLUDE_PATH}"
LIBRARY_PATH="\$_fl\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
# luarocks' configuration, which finds the rockspec's external dependencies in the bundle
LUAROCKS_SYSCONFDIR="\$_fr/etc/luarocks"
export FACET_BUNDLE PATH LUA_PATH LUA_CPATH LUA_INIT LD_LIBRARY_PATH FACET_BLAS_LIB C_INCLUDE_PATH LIBRARY_PATH LUAROCKS_SYSCONFDIR
export OPAL_PREFIX OPAL_SYSCONFDIR PMIX_PREFIX PMIX_LIBDIR PMIX_DATADIR
# without ssh or rsh (the GPU host) Open MPI's rsh launcher refuses to start
# even ranks on this machine; the isolated launcher starts them here only
_fa=""
for _fx in ssh rsh; do
    _fp=\$(command -v \$_fx 2>/dev/null) && [ -f "\$_fp" ] && [ -x "\$_fp" ] && _fa=\$_fp
done
if [ -z "\$_fa" ]; then
    OMPI_MCA_plm=isolated
    export OMPI_MCA_plm
fi
_fg=\$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc 2\.\([0-9]*\).*/\1/p')
if [ -n "\$_fg" ] && [ "\$_fg" -lt ${glibc_minor} ]; then
    echo "env.sh: warning: this host has glibc 2.\$_fg, the bundle needs $glibc" >&2
fi
unset _fb _fr _fl _fg _fa _fx _fp
EOF

# every ELF file in the bundle must resolve against the bundle plus the host's
# glibc/libgomp/libgcc/libstdc++/zlib (this machine may have more installed: a
# library found outside the bundle and not one of those counts as missing)
missing=$(
    LD_LIBRARY_PATH="$root/usr/lib/$ARCH:$root/usr/lib/$ARCH/openblas-openmp"
    export LD_LIBRARY_PATH
    find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' \) | while read -r f; do
        head -c 4 "$f" | grep -q ELF || continue
        ldd "$f" 2>/dev/null | while read -r lib arrow path _; do
            [ "$arrow" = "=>" ] || continue
            case $path in
                "$root"/*) ;;
                */libc.so.*|*/libm.so.*|*/libdl.so.*|*/libpthread.so.*|*/librt.so.*|*/libutil.so.*|\
                */libresolv.so.*|*/libgomp.so.*|*/libgcc_s.so.*|*/libstdc++.so.*|*/libz.so.*) ;;
                *) echo "$f: $lib => $path (not in the bundle)" ;;
            esac
        done
    done
)
if [ -n "$missing" ]; then
    echo "bundle.sh: unresolved libraries:" >&2
    echo "$missing" >&2
    exit 1
fi

{
    echo "# facet bundle: $(echo $PKGS | wc -w) Debian packages, .debs $(du -sk "$debs" | cut -f1) KiB, unpacked $(du -sk "$root" | cut -f1) KiB; needs glibc >= $glibc"
    cat "$BUNDLE_DIR/MANIFEST.tmp"
} >"$BUNDLE_DIR/MANIFEST"
rm -f "$BUNDLE_DIR/MANIFEST.tmp"
head -n 1 "$BUNDLE_DIR/MANIFEST" | sed 's/^# //'
echo "bundle.sh: wrote $BUNDLE_DIR/env.sh (on the GPU host: . $BUNDLE_DIR/env.sh)"
