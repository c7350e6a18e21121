--- facet.sys: the one home of facet's C-library declarations (libc, zlib) and
-- of what it asks of the operating system: the clock, terminals and files.
-- Nothing here builds a shell command line: directories are made and removed
-- through libc (mkdir, rmdir, unlink, rename) via the FFI, listed and examined
-- through lua-filesystem (lfs), so a path may hold quotes, `$(...)`, spaces,
-- newlines or a leading '-' and still names exactly one file.
--   sys.clock()                 monotonic seconds
--   sys.cpu_time()              CPU seconds of this process (all threads)
--   sys.isatty(fd)              true when fd (default 0) is a terminal
--   sys.realpath(path)          the path with links, '.' and '..' resolved (or nil, err)
--   sys.exists(path)  sys.is_dir(path)
--   sys.list_dir(path)          the sorted names in a directory, '.' and '..' left out (or nil, err)
--   sys.mkdir_p(path)           makes path and its missing parents (true, or nil, err)
--   sys.rm_rf(path)             removes path and everything below it, links not followed (true, or nil, err)
--   sys.read_file(path)         the whole file as bytes (or nil, err)
--   sys.rename(from, to)        (true, or nil, err)
--   sys.fsync(file)             flushes a Lua file and fsyncs it (true, or nil, err)
--   sys.sync_rename(moves)      fsyncs each { tmp, final } file, then renames them in order (true, or nil, err)
--   sys.write_atomic(path, data) writes path.tmp (a string, or a function(file) that writes),
--                               fsyncs it and renames it over path (true, or nil, err)
--   sys.zlib()                  the zlib library (gzopen / gzread / gzwrite / gzclose, crc32)
-- Errors come back as nil and a message naming the path, as io.open's do.
local ffi = require "ffi"
local lfs = require "lfs"

local M = {}

ffi.cdef [[
  struct facet_sys_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clk, struct facet_sys_timespec *ts);
  int isatty(int fd);
  int fileno(void *stream);
  int fsync(int fd);
  int open(const char *path, int flags, ...);
  int close(int fd);
  int mkdir(const char *path, unsigned int mode);
  int rmdir(const char *path);
  int unlink(const char *path);
  int rename(const char *from, const char *to);
  char *realpath(const char *path, char *resolved);
  char *strerror(int errnum);
  typedef struct gzFile_s *gzFile;
  gzFile gzopen(const char *path, const char *mode);
  int gzread(gzFile file, void *buf, unsigned int len);
  int gzclose(gzFile file);
  unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len);
]]
local C = ffi.C

local EEXIST = 17
local CLOCK_MONOTONIC = 1

-- "what: path: reason" from errno
local function failure(what, path)
  return nil, ("%s %s: %s"):format(what, path, ffi.string(C.strerror(ffi.errno())))
end

local ts = ffi.new("struct facet_sys_timespec")

--- CPU seconds this process has used, all its threads together (so
-- (cpu_time() delta) / (clock() delta) is the number of cores it kept busy).
function M.cpu_time()
  C.clock_gettime(2, ts)                                -- CLOCK_PROCESS_CPUTIME_ID
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

--- Wall-clock seconds from a monotonic clock (for timing steps and images/s).
function M.clock()
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

--- True when file descriptor fd (default 0, stdin) is a terminal.
function M.isatty(fd)
  return C.isatty(fd or 0) == 1
end

--- The absolute path with symbolic links, '.' and '..' resolved; nil, err when it does not exist.
function M.realpath(path)
  local buf = ffi.new("char[4097]")   -- PATH_MAX + 1 on Linux
  if C.realpath(path, buf) == nil then return failure("cannot resolve", path) end
  return ffi.string(buf)
end

local function mode(path) return lfs.attributes(path, "mode") end

--- True when path names something (links followed).
function M.exists(path) return mode(path) ~= nil end

--- True when path is a directory (or a link to one).
function M.is_dir(path) return mode(path) == "directory" end

--- The names in directory path, sorted, without '.' and '..'; nil, err when it cannot be read.
function M.list_dir(path)
  if not M.is_dir(path) then return nil, ("cannot list %s: not a directory"):format(path) end
  local ok, names = pcall(function()
    local t = {}
    for name in lfs.dir(path) do
      if name ~= "." and name ~= ".." then t[#t + 1] = name end
    end
    return t
  end)
  if not ok then return nil, ("cannot list %s: %s"):format(path, tostring(names)) end
  table.sort(names)
  return names
end

--- Makes directory path and any missing parents (mkdir -p); true, or nil and a message.
function M.mkdir_p(path)
  if type(path) ~= "string" or path == "" then return nil, "mkdir_p: want a non-empty path" end
  if M.is_dir(path) then return true end
  local prefix = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    prefix = prefix .. part
    if not M.is_dir(prefix) then
      if C.mkdir(prefix, tonumber("777", 8)) ~= 0 then
        local errno = ffi.errno()
        -- EEXIST: made meanwhile by someone else (fine), or a file is in the way
        if not (errno == EEXIST and M.is_dir(prefix)) then
          ffi.errno(errno)
          return failure("cannot create directory", prefix)
        end
      end
    end
    prefix = prefix .. "/"
  end
  return true
end

local function remove_tree(path)
  local kind = lfs.symlinkattributes(path, "mode")
  if kind == nil then return true end                       -- already gone
  if kind == "directory" then
    local names, err = M.list_dir(path)
    if not names then return nil, err end
    for _, name in ipairs(names) do
      local ok, rerr = remove_tree(path .. "/" .. name)
      if not ok then return nil, rerr end
    end
    if C.rmdir(path) ~= 0 then return failure("cannot remove directory", path) end
  elseif C.unlink(path) ~= 0 then                           -- files, and links themselves (never their targets)
    return failure("cannot remove", path)
  end
  return true
end

--- Removes path and everything below it (rm -rf): symbolic links are removed,
-- not followed; a path that does not exist is fine. Refuses "", "/", "." and "..".
function M.rm_rf(path)
  if type(path) ~= "string" or path == "" then return nil, "rm_rf: want a non-empty path" end
  local last = path:gsub("/+$", ""):match("[^/]*$")
  if last == "" or last == "." or last == ".." then return nil, ("rm_rf: refusing to remove %s"):format(path) end
  return remove_tree(path)
end

--- Renames from to to (replacing a file, or an empty directory, at to); true, or nil and a message.
--- The whole file at path, as bytes; nil and "cannot read PATH: reason" when it cannot be opened.
--- io.open(path, "rb") for reading, except that a directory is refused
-- (io.open opens one on Linux, and the first read then fails with a bare
-- message far from the path): the file, or nil and the reason without the
-- path ("No such file or directory", "Is a directory"), for a message that
-- names the path once.
function M.open_read(path)
  if mode(path) == "directory" then return nil, "Is a directory" end
  local f, err = io.open(path, "rb")
  if f then return f end
  err = tostring(err)
  local p = tostring(path) .. ": "
  if err:sub(1, #p) == p then err = err:sub(#p + 1) end
  return nil, err
end

function M.read_file(path)
  local f, err = M.open_read(path)
  if not f then return nil, ("cannot read %s: %s"):format(tostring(path), err) end
  local s = f:read("*a")
  f:close()
  return s
end

function M.rename(from, to)
  if C.rename(from, to) ~= 0 then return failure("cannot rename " .. from .. " to", to) end
  return true
end

--- Flushes Lua file f and fsyncs it to the disk; true, or nil and a message.
function M.fsync(f)
  local ok, err = f:flush()
  if not ok then return nil, err end
  -- LuaJIT passes an io file to a void * parameter as its FILE *
  if C.fsync(C.fileno(f)) ~= 0 then return failure("cannot fsync", "file") end
  return true
end

--- Files written under temporary names, put in place: fsyncs every
-- moves[i][1] (so none is renamed before all are on the disk), then renames
-- each over moves[i][2] in order; true, or nil and a message.
function M.sync_rename(moves)
  for _, m in ipairs(moves) do
    local f, err = io.open(m[1], "rb")
    if not f then return nil, ("cannot open %s"):format(err) end
    local synced, why = M.fsync(f)
    f:close()
    if not synced then return nil, why end
  end
  for _, m in ipairs(moves) do
    local ok, err = M.rename(m[1], m[2])
    if not ok then return nil, err end
  end
  return true
end

--- fsyncs directory path, so that a rename inside it survives a crash (best effort).
function M.fsync_dir(path)
  local fd = C.open(path, 0)                                -- O_RDONLY
  if fd < 0 then return failure("cannot open", path) end
  local rc = C.fsync(fd)
  C.close(fd)
  if rc ~= 0 then return failure("cannot fsync", path) end
  return true
end

--- Writes data (a string, or a function(file) that writes) to path.tmp, fsyncs
-- it and renames it over path, so path holds the old or the new contents, never
-- a part; true, or nil and a message (path.tmp is then removed).
function M.write_atomic(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, ("cannot write %s"):format(err) end
  local ok, werr = pcall(function()
    if type(data) == "function" then data(f) else assert(f:write(data)) end
    assert(M.fsync(f))
  end)
  f:close()
  if ok then ok, werr = M.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, ("writing %s failed: %s"):format(tmp, tostring(werr))
  end
  M.fsync_dir(path:match("^(.*)/[^/]*$") or ".")
  return true
end

local zlib
--- zlib, loaded on first use (for gzip-compressed IDX files).
function M.zlib()
  if not zlib then
    local ok, lib = pcall(ffi.load, "z")
    if not ok then ok, lib = pcall(ffi.load, "libz.so.1") end
    if not ok then return nil, "zlib (libz.so.1) is not installed (apt-get install zlib1g)" end
    zlib = lib
  end
  return zlib
end

return M
