--- spec/support/mpi.lua: starts `mpirun -np N bin/facet run SCRIPT ARGS...` for
-- the distributed specs and collects its output, without a shell: the argv
-- goes to posix_spawnp as it is (paths never meet a shell), stdout and stderr
-- go to a file, and `timeout` bounds the run.
--   local mpi = require "support.mpi"
--   mpi.available() -> bool, reason
--   mpi.run(np, { script, args... }, { env = { K = "v" }, limit = 120 }) -> output, exit status, seconds
-- np = 0 runs bin/facet alone (the 1-process reference), outside mpirun.
local ffi = require "ffi"
local F = require "support.files"

local M = {}

pcall(ffi.cdef, [[
typedef int pid_t;
int posix_spawnp(pid_t *pid, const char *file, const void *file_actions, const void *attrp,
                 char *const argv[], char *const envp[]);
int posix_spawn_file_actions_init(void *fa);
int posix_spawn_file_actions_destroy(void *fa);
int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, unsigned int mode);
int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd);
pid_t waitpid(pid_t pid, int *status, int options);
extern char **environ;
]])

local function which(name)
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if F.exists(dir .. "/" .. name) then return dir .. "/" .. name end
  end
end

function M.available()
  if not which("mpirun") then return false, "mpirun is not installed (openmpi-bin)" end
  return true
end

-- env: variables to set; drop: a variable to leave out of the child's environment
local function spawn(argv, env, log, drop)
  local args = ffi.new("char *[?]", #argv + 1)
  local keep = {}
  for i, a in ipairs(argv) do
    keep[i] = ffi.new("char[?]", #a + 1, a)
    args[i - 1] = keep[i]
  end
  -- the environment: this process's, with env's variables replacing theirs
  local vars, envs = {}, {}
  local i = 0
  while ffi.C.environ[i] ~= nil do
    local s = ffi.string(ffi.C.environ[i])
    local k = s:match("^([^=]*)=")
    if not (k and env[k] ~= nil) and k ~= drop then vars[#vars + 1] = s end
    i = i + 1
  end
  for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. v end
  local envp = ffi.new("char *[?]", #vars + 1)
  for j, s in ipairs(vars) do
    envs[j] = ffi.new("char[?]", #s + 1, s)
    envp[j - 1] = envs[j]
  end
  local fa = ffi.new("char[256]")              -- posix_spawn_file_actions_t is 80 bytes on glibc
  ffi.C.posix_spawn_file_actions_init(fa)
  ffi.C.posix_spawn_file_actions_addopen(fa, 1, log, 577, 420)   -- O_WRONLY|O_CREAT|O_TRUNC, 0644
  ffi.C.posix_spawn_file_actions_adddup2(fa, 1, 2)
  local pid = ffi.new("pid_t[1]")
  local rc = ffi.C.posix_spawnp(pid, args[0], fa, nil, args, envp)
  ffi.C.posix_spawn_file_actions_destroy(fa)
  assert(rc == 0, "posix_spawnp failed: " .. rc)
  local status = ffi.new("int[1]")
  ffi.C.waitpid(pid[0], status, 0)
  local st = status[0]
  if st % 128 == 0 then return math.floor(st / 256) % 256 end   -- exited
  return 128 + st % 128                                           -- killed by a signal
end

--- Runs argv ({ script, args... }) on np ranks; returns the output, the exit
-- status and the wall seconds.
function M.run(np, argv, opts)
  opts = opts or {}
  local cmd = { "timeout", "-k", "5", tostring(opts.limit or 120) }
  -- under `make sanitize` the ranks need the sanitizer runtimes preloaded, mpirun
  -- not; their leak check is off: Open MPI's plugins leave allocations behind
  -- at exit from code already unloaded, which no suppression can name (ASan's
  -- memory-error checks stay on, and the in-process cases keep the leak check)
  local preload = os.getenv("LD_PRELOAD")
  if np > 0 then
    for _, a in ipairs { "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", tostring(np) } do cmd[#cmd + 1] = a end
    if preload and preload ~= "" then
      for _, a in ipairs { "-x", "LD_PRELOAD=" .. preload, "-x",
        "ASAN_OPTIONS=" .. (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" } do cmd[#cmd + 1] = a end
    end
  end
  cmd[#cmd + 1] = "luajit"
  cmd[#cmd + 1] = "bin/facet"
  cmd[#cmd + 1] = "run"
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local log = os.tmpname()
  local env = { FACET_BUILD = os.getenv("FACET_BUILD") or "build" }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local clock = require("facet.sys").clock
  local c0 = clock()
  local rc = spawn(cmd, env, log, np > 0 and "LD_PRELOAD" or nil)
  local out = F.read_file(log)
  os.remove(log)
  return out, rc, clock() - c0
end

return M
