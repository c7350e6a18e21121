--- facet.lineedit: line editing, history and tab completion for the REPL,
-- through the readline interface of libedit (BSD licence; Debian's libedit2)
-- and the FFI. Torch7's trepl does the same with readline.
--   local le = require("facet.lineedit").open{ history = path, complete = fn }
--   local line = le:read("facet> ")   -- nil at end of input (Ctrl-D)
-- open returns nil and the reason when libedit cannot be loaded; the REPL
-- then reads plain lines. complete(word) returns the candidates that replace
-- the word before the cursor (a word includes '.' and ':', so "facet.ten"
-- and "x:sh" reach it whole).
local ffi = require "ffi"

local M = {}

-- Lines kept in the history file.
M.HISTORY_LINES = 1000

for _, decl in ipairs {
  "char *readline(const char *prompt);",
  "int add_history(const char *line);",
  "int read_history(const char *filename);",
  "int write_history(const char *filename);",
  "int history_truncate_file(const char *filename, int nlines);",
  "void using_history(void);",
  "typedef char **(*facet_lineedit_complete_fn)(const char *text, int start, int end);",
  "extern facet_lineedit_complete_fn rl_attempted_completion_function;",
  "extern const char *rl_completer_word_break_characters;",
  "extern const char *rl_basic_word_break_characters;",
  "extern int rl_completion_append_character;",
  "extern int rl_attempted_completion_over;",
  "extern const char *rl_readline_name;",
  "void *malloc(size_t size);",
  "void free(void *ptr);",
} do pcall(ffi.cdef, decl) end   -- another module may have declared them already

-- Lua's operators and brackets end a word; '.', ':' and '_' do not.
local BREAKS = ffi.new("char[?]", 32, " \t\n\"'`<>=;+-*/%^~#&|{}()[],")
local NAME = ffi.new("char[?]", 6, "facet")

local C = ffi.C

-- A malloc'd copy of s: readline frees what completion returns.
local function c_string(s)
  local p = ffi.cast("char *", C.malloc(#s + 1))
  if p ~= nil then ffi.copy(p, s) end   -- ffi.copy of a string adds the NUL
  return p
end

local function common_prefix(list)
  local p = list[1]
  for i = 2, #list do
    local s, n = list[i], 0
    while n < #p and n < #s and p:byte(n + 1) == s:byte(n + 1) do n = n + 1 end
    p = p:sub(1, n)
  end
  return p
end

-- The NULL-terminated char ** readline wants: [0] the common prefix that
-- replaces the word, then every candidate.
local function matches(list)
  if #list == 0 then return nil end
  local arr = ffi.cast("char **", C.malloc(ffi.sizeof("char *") * (#list + 2)))
  if arr == nil then return nil end
  arr[0] = c_string(common_prefix(list))
  for i = 1, #list do arr[i] = c_string(list[i]) end
  arr[#list + 1] = nil
  return arr
end

local Editor = {}
Editor.__index = Editor

local lib, active   -- libedit, and the one editor its globals point at

--- Opens the editor: opts.history (a file path or nil: no history file),
-- opts.complete (function(word) -> list of strings, or nil). Returns the
-- editor, or nil and why libedit is unavailable.
function M.open(opts)
  opts = opts or {}
  if not lib then
    local ok, l = pcall(ffi.load, "libedit.so.2")
    if not ok then return nil, "libedit could not be loaded (" .. tostring(l) .. "); install libedit2" end
    lib = l
  end
  local self = setmetatable({ history = opts.history, complete = opts.complete }, Editor)
  lib.rl_readline_name = NAME
  lib.using_history()
  lib.rl_basic_word_break_characters = BREAKS
  lib.rl_completer_word_break_characters = BREAKS
  if self.history then lib.read_history(self.history) end   -- a missing file is an empty history
  if self.complete then
    -- Errors must not unwind through libedit's C frames: any failure is "no candidates".
    self.callback = ffi.cast("facet_lineedit_complete_fn", function(text)
      lib.rl_attempted_completion_over = 1   -- never fall back to file names
      local ok, r = pcall(self.complete, ffi.string(text))
      if not ok or type(r) ~= "table" then return nil end
      return matches(r)
    end)
    lib.rl_attempted_completion_function = self.callback
    lib.rl_completion_append_character = 0
  end
  active = self
  return self
end

-- readline runs the completion callback: the caller must stay interpreted.
local function readline(prompt)
  local p = lib.readline(prompt)
  if p == nil then return nil end
  local s = ffi.string(p)
  C.free(p)
  return s
end
jit.off(readline)

--- One line without its newline, or nil at end of input. A non-empty line
-- goes into the history, and the history file is rewritten (so a session that
-- ends in os.exit or a crash keeps it).
function Editor:read(prompt)
  if active ~= self then error("facet.lineedit: this editor was closed or replaced", 2) end
  local line = readline(prompt or "")
  if line and line:find("%S") then
    lib.add_history(line)
    if self.history then
      lib.write_history(self.history)
      lib.history_truncate_file(self.history, M.HISTORY_LINES)
    end
  end
  return line
end

--- Detaches the completion callback (the editor cannot be used afterwards).
function Editor:close()
  if active == self then
    lib.rl_attempted_completion_function = nil
    active = nil
  end
  if self.callback then
    self.callback:free()
    self.callback = nil
  end
end

return M
