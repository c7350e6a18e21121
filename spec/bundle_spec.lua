--- The GPU host's bundle (tools/bundle.sh, `make bundle`): built here with
-- apt-get download and dpkg-deb, it must give luajit, busted, the Lua modules,
-- the JPEG/PNG headers and OpenBLAS to processes started with `env -i` and only
-- what build/bundle/env.sh sets (plus HOME=/tmp and PATH=/usr/bin:/bin for cc),
-- run the C tests and a real spec file there, and keep working when the tree is
-- copied elsewhere; its Open MPI runs relocated (mpirun, mpicc, help files, a
-- 2-rank facet collective with the bundle's libmpi loaded), with the host's
-- Open MPI hidden where a mount namespace can be made (root, unshare).
-- Pending when apt-get download cannot reach the network.
local H = require "support.device"
local sh = require("support.files").sh

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local cwd = (sh("pwd -P")):gsub("%s+$", "")
local build = os.getenv("FACET_BUILD") or "build"
local prefix = cwd .. "/build/bundle/root/"

-- a shell with nothing but env.sh's variables, HOME and the system's PATH
local function bare(script, shell)
  return sh(("env -i HOME=/tmp PATH=/usr/bin:/bin %s -c %s"):format(shell or "sh", q(script)))
end
local function in_bundle(cmd)
  return bare(". build/bundle/env.sh && " .. cmd)
end

local function starts(s, p) return s:sub(1, #p) == p end

describe("GPU host bundle", function()
  local ready, why

  local function need_bundle()
    if not ready then
      pending(why or "the bundle did not build")
      return false
    end
    return true
  end

  it("builds from apt-get download into build/bundle with env.sh", function()
    if os.getenv("FACET_SANITIZE") == "1" then
      why = "the bundle runs the default build, not the sanitizer one"
      pending(why)
      return
    end
    if os.getenv("FACET_BUNDLE") then
      -- rebuilding the bundle this very process runs from would pull it away under it
      why = "this run itself uses a bundle (FACET_BUNDLE=" .. os.getenv("FACET_BUNDLE") ..
        "): run the bundle spec from a shell without env.sh"
      pending(why)
      return
    end
    local out, rc = sh("sh tools/bundle.sh")
    if rc == 3 then
      why = "apt-get download cannot reach the network: " .. (out:match("([^\n]+)\n?$") or "")
      pending(why)
      return
    end
    assert.are.equal(0, rc, out)
    for _, f in ipairs { "env.sh", "MANIFEST", "root/usr/bin/luajit", "root/usr/bin/busted", "root/usr/bin/luarocks",
                         "root/usr/include/jpeglib.h", "root/usr/include/png.h",
                         "root/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
                         "root/usr/bin/mpirun", "root/usr/bin/mpicc", "root/usr/bin/orted",
                         "root/usr/lib/x86_64-linux-gnu/libmpi.so.40",
                         "root/usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so",
                         "root/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h",
                         "root/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/mca_btl_vader.so",
                         "root/usr/lib/x86_64-linux-gnu/libpmix.so.2",
                         "root/usr/share/openmpi/help-orterun.txt",
                         "root/usr/share/openmpi/mpicc-wrapper-data.txt",
                         "root/etc/openmpi/openmpi-mca-params.conf" } do
      assert.is_true(os.execute("test -e build/bundle/" .. f) == 0, "missing build/bundle/" .. f)
    end
    local manifest = H.read_file("build/bundle/MANIFEST")
    for _, p in ipairs { "luajit", "lua-busted", "lua-luassert", "lua-penlight", "lua-cjson", "lua-argparse",
                         "libopenblas0-openmp", "libgfortran5", "libjpeg62-turbo-dev", "libpng-dev",
                         "openmpi-bin", "libopenmpi3", "libopenmpi-dev", "libpmix2", "libhwloc15" } do
      assert.truthy(manifest:find("\n" .. p:gsub("%-", "%%-") .. " "), p .. " not in the MANIFEST:\n" .. manifest)
    end
    -- what every host with gcc has is not carried
    local extra = sh("find build/bundle/root -name 'libgomp*' -o -name 'libz.*' -o -name 'libstdc++*' -o -name 'libgcc_s*'")
    assert.are.equal("", extra)
    -- nor the fabrics' Open MPI plugins, whose libraries (UCX, libfabric, verbs, PSM) are not carried
    extra = sh("find build/bundle/root -name 'mca_pml_ucx.so' -o -name 'mca_mtl_ofi.so' -o -name 'mca_btl_openib.so' " ..
      "-o -name 'mca_mtl_psm2.so' -o -name 'libucp*' -o -name 'libfabric*'")
    assert.are.equal("", extra)
    ready = true
  end)

  it("puts luajit, busted and every Lua module of the bundle first", function()
    if not need_bundle() then return end
    local modules = { "busted.runner", "luassert", "say", "pl.path", "cliargs", "mediator", "dkjson", "system",
                      "term", "argparse", "luarocks.core.cfg" }
    local quoted = {}
    for i, m in ipairs(modules) do quoted[i] = ("%q"):format(m) end
    local code = "for _, m in ipairs{" .. table.concat(quoted, ",") .. "} do require(m); print(package.searchpath(m, package.path)) end " ..
      "for _, m in ipairs{'cjson', 'lfs', 'system.core', 'term.core'} do require(m); print(package.searchpath(m, package.cpath)) end"
    local out, rc = in_bundle("command -v luajit && command -v busted && luajit -e " .. q(code))
    assert.are.equal(0, rc, out)
    local n = 0
    for line in out:gmatch("[^\n]+") do
      n = n + 1
      assert.is_true(starts(line, prefix), line .. " is not in " .. prefix)
    end
    assert.are.equal(2 + #modules + 4, n, out)
    -- a process that sets LUA_PATH / LUA_CPATH itself still finds the bundle (LUA_INIT)
    out, rc = in_bundle("LUA_PATH='./lua/?.lua' LUA_CPATH='/nonexistent/?.so' luajit -e " ..
      q("require 'cjson'; require 'argparse'; print(package.searchpath('cjson', package.cpath))"))
    assert.are.equal(0, rc, out)
    assert.is_true(starts(out, prefix), out)
  end)

  it("compiles against its jpeglib.h and png.h and links its libjpeg and libpng", function()
    if not need_bundle() then return end
    local dir = H.temp_dir()
    H.write_file(dir .. "/t.c", "#include <stdio.h>\n#include <jpeglib.h>\n#include <png.h>\n" ..
      "int main(void) { struct jpeg_error_mgr e; jpeg_std_error(&e); puts(png_get_libpng_ver(NULL)); return 0; }\n")
    local out, rc = in_bundle(("cc -v -H %s/t.c -o %s/t -ljpeg -lpng && %s/t && ldd %s/t"):format(dir, dir, dir, dir))
    H.remove_dir(dir)
    assert.are.equal(0, rc, out)
    for _, pat in ipairs { "%. (%S*jpeglib%.h)\n", "%. (%S*png%.h)\n", "libjpeg%.so%.62 => (%S+)", "libpng16%.so%.16 => (%S+)" } do
      local path = out:match(pat)
      assert.truthy(path, pat .. " not in:\n" .. out)
      assert.is_true(starts(path, prefix), path .. " is not the bundle's")
    end
    -- LIBRARY_PATH comes after gcc's own directories: where the host has no
    -- libjpeg.so / libpng.so (no -dev packages) the linker takes the bundle's
    local libdir = prefix .. "usr/lib/x86_64-linux-gnu"
    assert.truthy(out:find(" -L" .. libdir .. " ", 1, true), "no -L" .. libdir .. " in:\n" .. out)
    assert.is_true(os.execute(("test -e %s/libjpeg.so && test -e %s/libpng.so"):format(libdir, libdir)) == 0)
  end)

  it("runs the C tests against the bundle's libraries", function()
    if not need_bundle() then return end
    local counts = os.tmpname()
    local out, rc = in_bundle(("%s/test_core --counts %s >/dev/null && ldd %s/facet_core.so"):format(build, counts, build))
    local c = H.read_file(counts)
    os.remove(counts)
    assert.are.equal(0, rc, out)
    assert.truthy(c:match("^%d+ 0"), "C tests: " .. c)
    assert.is_true(starts(out:match("libjpeg%.so%.62 => (%S+)") or "", prefix), out)
  end)

  it("runs a spec file under the bundle's busted, with the bundle's OpenBLAS", function()
    if not need_bundle() then return end
    local out, rc = in_bundle(("FACET_BUILD=%s busted -o spec/support/summary.lua spec/matmul_spec.lua"):format(build))
    assert.are.equal(0, rc, out)
    local passed, failed = out:match("\n(%d+) passed, (%d+) failed\n?$")
    assert.truthy(passed, out)
    assert.is_true(tonumber(passed) > 0 and failed == "0", out)
    out, rc = in_bundle(("FACET_BUILD=%s luajit bin/facet run /dev/stdin <<'EOF'\nprint(facet.blas_library())\nEOF"):format(build))
    assert.are.equal(0, rc, out)
    assert.is_true(starts(out, prefix .. "usr/lib/x86_64-linux-gnu/openblas-openmp/"), out)
    -- and make's dependency step installs nothing there
    out, rc = in_bundle("sh tools/deps.sh")
    assert.are.same({ 0, "" }, { rc, out })
  end)

  it("works after the tree is copied elsewhere, from bash and from sh in the checkout", function()
    if not need_bundle() then return end
    local dir = H.temp_dir()
    assert.is_true(os.execute(("mkdir -p %s/copy/build/bundle && cp -a build/bundle/root build/bundle/env.sh %s/copy/build/bundle/")
      :format(dir, dir)) == 0)
    local code = q("print(package.searchpath('busted.runner', package.path))")
    local b_out, b_rc = bare((". %s/copy/build/bundle/env.sh && cd / && command -v luajit && luajit -e %s"):format(dir, code), "bash")
    local s_out, s_rc = bare(("cd %s/copy && . build/bundle/env.sh && command -v busted && luajit -e %s"):format(dir, code))
    local lost_out, lost_rc = bare(("cd / && . %s/copy/build/bundle/env.sh"):format(dir))   -- sh, from elsewhere
    H.remove_dir(dir)
    assert.are.equal(0, b_rc, b_out)
    assert.are.equal(0, s_rc, s_out)
    for line in (b_out .. s_out):gmatch("[^\n]+") do
      assert.is_true(starts(line, dir .. "/copy/build/bundle/root/"), line)
    end
    assert.are_not.equal(0, lost_rc)
    assert.truthy(lost_out:find("cannot find the bundle", 1, true), lost_out)
  end)

  it("runs Open MPI relocated: mpirun, mpicc, its help files and a 2-rank facet collective on the bundle's libmpi", function()
    if not need_bundle() then return end
    if not require("facet").dist.built().mpi then
      pending("this build of facet has no MPI (FACET_MPI=0 or no mpicc when it was built)")
      return
    end
    local dir = H.temp_dir()
    assert.is_true(os.execute(("mkdir -p %s/copy && cp -a build/bundle/root build/bundle/env.sh %s/copy/"):format(dir, dir)) == 0)
    local copy = dir .. "/copy/root/"
    H.write_file(dir .. "/maps.lua", [[
local facet = require "facet"
local dist = facet.dist.init()
local f = assert(io.open("/proc/self/maps"))
local lib = f:read("*a"):match("(/%S+/libmpi%.so[%.%d]*)\n")
f:close()
print(("rank %d of %d: %s"):format(dist.rank(), dist.size(), tostring(lib)))
dist.finalize()
]])
    -- the host's Open MPI and PMIx made unusable, and ssh and rsh (as on the GPU host: env.sh
    -- then picks Open MPI's isolated launcher), where a mount namespace can be made
    -- (bash: from the checkout's root, sh's env.sh would find build/bundle, not the copy)
    local L = "/usr/lib/x86_64-linux-gnu"
    local hide = ("for d in %s/openmpi %s/pmix2 /usr/share/openmpi /etc/openmpi; do [ -d $d ] && mount -t tmpfs none $d; done; " ..
      "for f in /usr/bin/orterun /usr/bin/orted /usr/bin/opal_wrapper %s/libmpi.so.40.* %s/libopen-rte.so.40.* " ..
      "%s/libopen-pal.so.40.* %s/libpmix.so.2.* /usr/bin/ssh /usr/bin/rsh; do [ -f $f ] && mount --bind /dev/null $f; " ..
      "done; "):format(L, L, L, L, L, L)
    local hidden = os.execute("unshare -m true 2>/dev/null") == 0
    local mpirun = "mpirun --allow-run-as-root --oversubscribe -np 2 "
    local script = (". %s/copy/env.sh && command -v mpirun && command -v mpicc && ompi_info --path all | grep 'Prefix:' && " ..
      "mpicc --showme:compile && %s hostname && echo == && (%s /nonexistent/program; true) && echo == && " ..
      "FACET_BUILD=%s %s luajit bin/facet run %s/maps.lua && echo == && " ..
      "FACET_BUILD=%s %s luajit bin/facet run spec/support/nccl_check.lua cpu; echo \"rc $?\""):format(dir, mpirun,
      mpirun, build, mpirun, dir, build, mpirun)
    local out, rc
    if hidden then
      out, rc = sh(("unshare -m sh -c %s"):format(q(hide .. "env -i HOME=/tmp PATH=/usr/bin:/bin bash -c " .. q(script))))
    else
      out, rc = bare(script, "bash")
    end
    H.remove_dir(dir)
    assert.are.equal(0, rc, out)
    local parts = {}
    for part in (out .. "\n"):gmatch("(.-)\n==\n") do parts[#parts + 1] = part end
    parts[#parts + 1] = out:match(".*\n==\n(.*)$")
    assert.are.equal(4, #parts, out)
    -- the bundle's mpirun and mpicc, with every directory under the copy, then one hostname per rank
    local lines = {}
    for line in parts[1]:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(6, #lines, parts[1])
    assert.are.equal(copy .. "usr/bin/mpirun", lines[1])
    assert.are.equal(copy .. "usr/bin/mpicc", lines[2])
    assert.are.equal("Prefix: " .. copy .. "usr", lines[3]:match("Prefix: %S+"))
    assert.is_true(starts(lines[4], "-I" .. copy .. "usr/lib/x86_64-linux-gnu/openmpi/include "), lines[4])
    local host = (sh("uname -n")):gsub("%s+$", "")
    assert.are.same({ host, host }, { lines[5], lines[6] })
    -- an error message read from the relocated help files
    assert.truthy(parts[2]:find("/nonexistent/program", 1, true), parts[2])
    assert.falsy(parts[2]:find("help file", 1, true), parts[2])
    -- both ranks of facet loaded the bundle's libmpi (LD_LIBRARY_PATH before the build's runpath)
    for rank = 0, 1 do
      local lib = parts[3]:match("rank " .. rank .. " of 2: (%S+)")
      assert.truthy(lib, parts[3])
      assert.is_true(starts(lib, copy), lib .. " is not the bundle's libmpi")
    end
    -- the collectives through MPI, on both ranks
    local _, n = parts[4]:gsub("%f[%d]8 passed, 0 failed", "")
    assert.are.equal(2, n, parts[4])
    assert.truthy(parts[4]:find("rc 0", 1, true), parts[4])
  end)
end)
