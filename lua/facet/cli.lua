--- facet.cli: the `facet` command line (bin/facet calls cli.main(arg)).
--   facet                    interactive REPL with `facet` loaded
--   facet run FILE [ARGS...]  run a Lua script the way luajit would, with `facet` loaded
--   facet help [COMMAND]      usage; facet --version prints the library version
-- Commands live in one table (`commands` below): adding eval / report / train means
-- adding an entry there. main returns the exit status instead of exiting, so the
-- caller decides (bin/facet passes it to os.exit).
local argparse = require "argparse"

local M = {}

-- Exit statuses: 1 for a failing script, 2 for a command line we do not understand.
M.EXIT_FAILURE, M.EXIT_USAGE = 1, 2

-- The library is loaded lazily: `facet --help` must work even when the C core is broken.
local function load_facet()
  local facet = require "facet"
  rawset(_G, "facet", facet)
  return facet
end

-- The message of an error value, as luajit's own front end words it.
local function error_text(err)
  if type(err) == "string" or type(err) == "number" then return tostring(err) end
  local mt = getmetatable(err)
  if mt and mt.__tostring then return tostring(err) end
  return ("(error object is a %s value)"):format(type(err))
end

-- Traceback for a script error, cut before the frames of facet.cli itself
-- (everything below the xpcall is our plumbing, not the user's code).
local function script_traceback(err)
  local tb = debug.traceback(error_text(err), 2)
  local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

--- Runs the Lua file at path with the script's `arg` table already built.
-- Returns the exit status; the script's own os.exit ends the process as usual.
function M.run_script(path, script_arg, nargs)
  local chunk, err = loadfile(path)
  if not chunk then
    local f = io.open(path, "r")
    if f then
      f:close()
      io.stderr:write("facet: ", err, "\n") -- syntax error: loadfile's message names the line
    else
      io.stderr:write(("facet: cannot open script '%s' (no such file or not readable)\n"):format(path))
    end
    return M.EXIT_FAILURE
  end
  load_facet()
  rawset(_G, "arg", script_arg)
  -- luajit also hands the script its arguments as `...`
  local ok, msg = xpcall(chunk, script_traceback, unpack(script_arg, 1, nargs or #script_arg))
  if not ok then
    io.stdout:flush() -- keep the script's output ahead of the error when both go to one pipe
    io.stderr:write("facet: ", msg, "\n")
    return M.EXIT_FAILURE
  end
  return 0
end

--- The `arg` table a script sees: like luajit, arg[0] is the script, arg[1..] its
-- arguments, and everything before the script (interpreter, bin/facet, "run")
-- sits at negative indices. script_at is the script's index in argv.
-- Returns the table and the number of script arguments.
function M.script_arg(argv, script_at)
  local t, lowest = {}, 0
  for i in pairs(argv) do
    if type(i) == "number" and i < lowest then lowest = i end
  end
  for i = lowest, #argv do t[i - script_at] = argv[i] end
  return t, #argv - script_at
end

-- The command table: name, summary, configure(cmd) to declare its arguments with
-- argparse, and run(parsed, argv) returning an exit status.
local commands = {
  {
    name = "repl",
    summary = "Interactive LuaJIT prompt with `facet` loaded (the default).",
    run = function()
      load_facet()
      return require("facet.repl").run() or 0
    end,
  },
  {
    name = "run",
    summary = "Run a Lua script with `facet` loaded.",
    configure = function(cmd)
      -- Everything after the script belongs to the script, '-' options included,
      -- so this command's parser stops treating dashes as options.
      cmd:handle_options(false)
      cmd:argument("script", "Lua file to run.")
      cmd:argument("args", "Arguments for the script (its arg[1], arg[2], ...)."):args("*")
    end,
    run = function(parsed, argv)
      if parsed.script == "-h" or parsed.script == "--help" then
        io.stdout:write(M.command_parser("run"):get_help(), "\n")
        return 0
      end
      -- The script's arguments are argv's tail, so the script sits just before them.
      local script_at = #argv - #parsed.args
      local script_arg, nargs = M.script_arg(argv, script_at)
      return M.run_script(parsed.script, script_arg, nargs)
    end,
  },
}
M.commands = commands

local by_name = {}
for _, c in ipairs(commands) do by_name[c.name] = c end

--- The argparse parser for the whole command line (built on demand, help text included).
function M.parser()
  local parser = argparse("facet", "Face-recognition training engine (LuaJIT + C core).")
    :require_command(false)
    :command_target("command")
    :add_help_command()
    :epilog("With no command, facet opens the REPL.")
  parser:flag("--version", "Print the facet version and exit.")
  for _, c in ipairs(commands) do
    local cmd = parser:command(c.name):summary(c.summary):description(c.summary)
    if c.configure then c.configure(cmd) end
  end
  return parser
end

--- The sub-parser of one command (for its help text).
function M.command_parser(name)
  for _, cmd in ipairs(M.parser()._commands) do
    if cmd._name == name then return cmd end
  end
end

--- Entry point: argv is the global `arg` of bin/facet (negative indices kept for
-- `run`). Returns the process exit status.
function M.main(argv)
  argv = argv or {}
  local list = {}
  for i = 1, #argv do list[i] = argv[i] end

  local parser = M.parser()
  local ok, parsed = parser:pparse(list)
  if not ok then
    io.stderr:write(parser:get_usage(), "\n\nError: ", parsed,
      "\nRun 'facet help' for the list of commands.\n")
    return M.EXIT_USAGE
  end
  if parsed.version then
    io.stdout:write(load_facet().version, "\n")
    return 0
  end
  local c = by_name[parsed.command or "repl"]
  return c.run(parsed, argv) or 0
end

return M
