--- facet.about: what a run records about where it ran, and what
-- `facet --version` prints: facet's version and the commit of its checkout,
-- the backends built in, the BLAS, the threads, the CPU and GPUs, the host
-- and the date. The commit is read from .git's files (no git command).
--   local about = require "facet.about"
--   about.info()     -> { version =, commit =, cuda =, blas =, threads =, cpu =, host =, date = ... }
--   about.lines()    -> the same as "key: value" lines
-- Nothing here fails: what cannot be found is left out (or "unavailable").
local ffi = require "ffi"
local sys = require "facet.sys"

local M = {}

-- lua/facet/ of this checkout or installation ("" when unknown)
local HERE = (debug.getinfo(1, "S").source:match("^@(.*[/\\])about%.lua$") or "")

--- The commit of the checkout facet runs from, or nil when it is not one
-- (an installed rock). A worktree's .git is a file naming its directory.
function M.commit()
  if HERE == "" then return nil end
  local root = HERE .. "../../"
  local read = sys.read_file
  local gitdir = root .. ".git/"
  local link = read(root .. ".git")
  if link and link:match("^gitdir: ") then gitdir = link:match("^gitdir: ([^\n]+)") .. "/" end
  local head = read(gitdir .. "HEAD")
  if not head then return nil end
  local ref = head:match("^ref: ([^\n]+)")
  if not ref then return head:match("^(%x+)") end
  local common = read(gitdir .. "commondir")
  local base = common and (common:match("^/") and "" or gitdir) .. common:match("^([^\n]+)") .. "/" or gitdir
  local id = read(gitdir .. ref) or read(base .. ref)
  if id then return id:match("^(%x+)") end
  local packed = read(base .. "packed-refs") or ""
  return packed:match("(%x+) " .. ref:gsub("%p", "%%%0") .. "\n")
end

--- The CPU's model name and its logical processors, from /proc/cpuinfo.
function M.cpu()
  local text = sys.read_file("/proc/cpuinfo")
  if not text then return nil end
  local model = text:match("model name%s*:%s*([^\n]+)")
  local n = select(2, text:gsub("\nprocessor%s*:", "")) + (text:match("^processor%s*:") and 1 or 0)
  return model and ("%s, %d logical processors"):format(model, n) or nil
end

local function host()
  local h = sys.read_file("/proc/sys/kernel/hostname") or sys.read_file("/etc/hostname")
  return h and h:match("^%s*(.-)%s*$") or nil
end

--- The facts, as a table of strings (each may be nil).
function M.info()
  local core = require "facet.core"
  local C = core.C
  local out = { version = ffi.string(C.facet_version()), commit = M.commit(), cpu = M.cpu(), host = host(),
    date = os.date("!%Y-%m-%d %H:%M:%S UTC"), luajit = jit and jit.version or _VERSION }
  local cuda = require "facet.cuda"
  local ok, built = pcall(cuda.built)
  if ok and built then
    local okc, n = pcall(cuda.device_count)
    n = okc and n or 0
    local gpus = {}
    for i = 0, n - 1 do
      local okn, name, mem = pcall(cuda.device_name, i)
      if okn then gpus[#gpus + 1] = ("%d: %s, %.1f GiB"):format(i, name, mem / 2 ^ 30) end
    end
    out.cuda = ("built in; %d device(s) visible%s"):format(n, #gpus > 0 and (" (" .. table.concat(gpus, "; ") .. ")")
      or "")
  else
    out.cuda = "not built in"
  end
  local buf = ffi.new("char[512]")
  if C.facet_blas_info(buf, 512) == 0 then
    out.blas = "OpenBLAS, core " .. ffi.string(buf)
    if C.facet_blas_library(buf, 512) == 0 then out.blas_library = ffi.string(buf) end
  else
    out.blas = "unavailable (" .. ffi.string(C.facet_last_error()) .. ")"
  end
  local okd, built = pcall(function() return require("facet.dist").built() end)
  if okd and type(built) == "table" then
    out.dist = ("MPI %s, NCCL %s"):format(built.mpi and "built in" or "not built in",
      built.nccl and "built in" or "not built in")
  end
  local okt, threads = pcall(core.get_threads)
  out.threads = okt and tostring(threads) or nil
  return out
end

-- the order lines() prints them in
M.FIELDS = { "version", "commit", "cuda", "dist", "blas", "threads", "cpu", "host", "date", "luajit" }

--- "key: value" lines of info() (or of a given table), in FIELDS order; the
-- version line reads "facet X".
function M.lines(info)
  info = info or M.info()
  local lines = { "facet " .. tostring(info.version) }
  for i = 2, #M.FIELDS do
    local k = M.FIELDS[i]
    if info[k] ~= nil then lines[#lines + 1] = ("%s: %s"):format(k == "cuda" and "CUDA" or
      k == "blas" and "BLAS" or k, tostring(info[k])) end
  end
  return lines
end

return M
