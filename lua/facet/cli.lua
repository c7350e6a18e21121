--- facet.cli: the `facet` command line (bin/facet calls cli.main(arg)).
--   facet                    interactive REPL with `facet` loaded
--   facet run FILE [ARGS...]  run a Lua script the way luajit would, with `facet` loaded
--   facet info FILE           describe a .rec, .bin, .npy, .safetensors or IDX file
--   facet help [COMMAND]      usage; facet --version prints the library version
-- Commands live in one table (`commands` below): adding eval / report / train means
-- adding an entry there. main returns the exit status instead of exiting, so the
-- caller decides (bin/facet passes it to os.exit).
--
-- Errors: a mistake facet reports (an error raised by facet's own modules: a
-- bad argument, option or file) prints as its message alone, which names the
-- function and the user's line; any other error (the script's own, or a bug)
-- prints with its traceback, as luajit does. FACET_DEBUG=1 prints the
-- traceback for every error.
local argparse = require "argparse"
local check = require "facet.check"      -- loads no C: the parser's converters use it

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

-- facet's module directory as debug.getinfo names sources ("@./lua/facet/")
local OWN = debug.getinfo(1, "S").source:match("^(@.*[/\\])cli%.lua$")

local function own(info) return info ~= nil and OWN ~= nil and info.source:sub(1, #OWN) == OWN end

local function debugging() return os.getenv("FACET_DEBUG") == "1" end

--- Whether the error now being handled (in an xpcall handler, called from
-- `level`) was raised on purpose by facet: error() or assert() called from one
-- of facet's modules. A runtime error inside facet (a bug) is not.
local function raised_by_facet(level)
  local raiser = debug.getinfo(level + 1, "S")
  return raiser ~= nil and raiser.what == "C" and own(debug.getinfo(level + 2, "S"))
end

-- A message without a leading position inside facet's own files (a long path
-- comes shortened with "..." in front, so its tail is recognised too).
local function strip_own_position(msg)
  local path, rest = msg:match("^([^\n]-):%d+: (.*)$")
  if not path then return msg end
  if (OWN and ("@" .. path):sub(1, #OWN) == OWN) or path:find("facet/[%w_]+%.lua$") or
     path:find("facet/[%w_]+/[%w_]+%.lua$") then
    return rest
  end
  return msg
end
M.strip_own_position = strip_own_position

-- Traceback for a script error, cut before the frames of facet.cli itself
-- (everything below the xpcall is our plumbing, not the user's code); facet's
-- own messages come alone (see the header).
local function script_traceback(err)
  if not debugging() and raised_by_facet(2) then return strip_own_position(error_text(err)) end
  local tb = debug.traceback(error_text(err), 2)
  local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

-- The message of a command's error, with a traceback under FACET_DEBUG=1.
local function command_error(err)
  local msg = strip_own_position(error_text(err))
  if debugging() then return debug.traceback(msg, 2) end
  return msg
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
  {
    name = "pack",
    summary = "Pack an image folder (root/<identity>/<image>) or a list file into InsightFace's .rec/.idx.",
    configure = function(cmd)
      cmd:argument("source", "Image folder, or a list file of 'path label' lines.")
      cmd:argument("prefix", "Output prefix (writes PREFIX.rec and PREFIX.idx).")
    end,
    run = function(parsed)
      local facet = load_facet()
      local r = facet.data.pack(parsed.source, parsed.prefix)
      for i, s in ipairs(r.skipped) do
        if i <= 20 then io.stderr:write(("skipped %s: %s\n"):format(s[1], s[2])) end
      end
      if #r.skipped > 20 then io.stderr:write(("... and %d more skipped\n"):format(#r.skipped - 20)) end
      io.stdout:write(("%s.rec: %d images, %d identities%s; names in %s.lst\n"):format(parsed.prefix, r.images,
        r.identities, #r.skipped > 0 and (", %d incomplete images skipped"):format(#r.skipped) or "",
        (parsed.prefix:gsub("%.rec$", ""))))
      return 0
    end,
  },
  {
    name = "unpack",
    summary = "Write the images of a .rec into a folder, one subfolder per identity (named as packed when a .lst is beside it).",
    configure = function(cmd)
      cmd:argument("prefix", "RecordIO prefix (PREFIX.rec and PREFIX.idx).")
      cmd:argument("folder", "Output folder.")
    end,
    run = function(parsed)
      local facet = load_facet()
      local r = facet.data.unpack(parsed.prefix, parsed.folder)
      io.stdout:write(("%s: %d images%s\n"):format(parsed.folder, r.images,
        r.named and ", named as packed (.lst)" or ", in label folders (no .lst beside the .rec)"))
      return 0
    end,
  },
  {
    name = "eval",
    summary = "Verification accuracy of a checkpoint on InsightFace .bin sets (lfw.bin, cfp_fp.bin, ...), IJB-B/C, MegaFace.",
    configure = function(cmd)
      require("facet.backbone").options(cmd, true)
      cmd:option("--bin", "A verification .bin file (repeat for several)."):count("*"):args(1)
      cmd:option("--ijb", "IJB-B or IJB-C folder holding meta/: 1:1 template verification (docs/eval.md).")
      cmd:option("--features", "For --ijb: per-image features .npy (N x d, or N x 2d [image | mirror]) in the face list's order.")
      cmd:option("--images", "For --ijb with a checkpoint: folder of aligned crops named as in the face list.")
      cmd:option("--megaface", "Folder holding probes.npy, probe_labels.npy, distractors.npy: MegaFace identification and TAR@FAR=1e-6.")
      cmd:option("--protocol", "insightface or facexzoo.", "insightface"):choices { "insightface", "facexzoo" }
      cmd:flag("--no-flip", "Skip the flip test.")
    end,
    run = function(parsed)
      M.evaluate(load_facet(), parsed)
      return 0
    end,
  },
  {
    name = "report",
    summary = "Write report.html and SVG plots (loss, lr, ROC, metrics) for one or more run directories.",
    configure = function(cmd)
      cmd:argument("runs", "Run directories (holding train.jsonl, and verify.json if evaluated)."):args("+")
      cmd:option("--out", "Output directory (default: the first run).")
    end,
    run = function(parsed)
      local facet = load_facet()
      local path = facet.report.write(parsed.runs, parsed.out)
      io.stdout:write(path, "\n")
      return 0
    end,
  },
  {
    name = "convert",
    summary = "Convert weights between .pth (PyTorch), .safetensors and facet checkpoint directories.",
    configure = function(cmd)
      cmd:argument("input", "A .pth, a .safetensors file or a checkpoint directory.")
      cmd:argument("output", "A .pth/.pt, a .safetensors file, or a directory ending in '/' (a checkpoint).")
    end,
    run = function(parsed)
      load_facet()
      local pth = require "facet.pth"
      local w, from = pth.load_any(parsed.input, "convert")
      local n = 0
      for _ in pairs(w) do n = n + 1 end
      local to = pth.save_any(w, parsed.output, "convert")
      io.stdout:write(("%s (%s) -> %s (%s): %d tensors\n"):format(parsed.input, from, parsed.output, to, n))
      return 0
    end,
  },
  {
    name = "info",
    summary = "Describe a data or weights file: .rec (with its .idx), .bin, .npy, .safetensors, IDX.",
    configure = function(cmd)
      cmd:argument("file", "The file to describe.")
    end,
    run = function(parsed)
      M.describe_file(load_facet(), parsed.file)
      return 0
    end,
  },
  {
    name = "export",
    summary = "Export a checkpoint's backbone as an ONNX inference graph (opset 11, input 'data' N x 3 x size x size).",
    configure = function(cmd)
      require("facet.embed").model_options(cmd)
      cmd:option("-o --output", "The .onnx file to write."):count(1)
    end,
    run = function(parsed) return require("facet.embed").export_command(load_facet(), parsed) end,
  },
  {
    name = "embed",
    summary = "Embed every image of a folder, list file, .rec or .bin into an .npy (keys in order beside it).",
    configure = function(cmd)
      require("facet.embed").model_options(cmd)
      cmd:argument("images", "Image folder, list file (a path a line), .rec or .bin.")
      cmd:option("-o --output", "The .npy to write (the keys go to the same name with .txt)."):count(1)
      cmd:option("--batch-size", "Images a batch.", "64"):convert(check.flag("--batch-size", { integer = true, min = 1 }))
      cmd:option("--threads", "Loader threads (default: facet's)."):convert(check.flag("--threads",
        { integer = true, min = 1 }))
      cmd:flag("--no-flip", "Skip the flip test.")
      cmd:flag("--norms", "Also write each image's embedding norm before normalisation (a quality score for " ..
        "MagFace- and AdaFace-trained models) to OUTPUT's name with _norms.npy.")
    end,
    run = function(parsed) return require("facet.embed").embed_command(load_facet(), parsed) end,
  },
  {
    name = "clean",
    summary = "Clean a training .rec with a head trained with sub-centres (Sub-center ArcFace): drop the images " ..
      "far from their class's dominant sub-centre.",
    configure = function(cmd)
      require("facet.embed").model_options(cmd)
      cmd:argument("data", "The InsightFace training set (.rec with its .idx) the head was trained on.")
      cmd:option("-o --output", "Prefix of what it writes: OUTPUT.rec/.idx (the kept images), OUTPUT_init.safetensors " ..
        "(the checkpoint's weights, the head's its dominant sub-centres), OUTPUT_dropped.txt, OUTPUT_clean.json."):count(1)
      cmd:option("--threshold", "Drop images farther than this many degrees from their class's dominant sub-centre.",
        "75"):convert(check.flag("--threshold", { min = 0, max = 180 }))
      cmd:option("--subcenters", "Sub-centres a class (default: what the checkpoint's trainer.json says)."):convert(
        check.flag("--subcenters", { integer = true, min = 1, max = 255 }))
      cmd:option("--embeddings", "Embeddings of the training set from 'facet embed' (keys beside it) instead of " ..
        "embedding it here.")
      cmd:option("--batch-size", "Images a batch.", "64"):convert(check.flag("--batch-size", { integer = true, min = 1 }))
      cmd:option("--threads", "Loader threads (default: facet's)."):convert(check.flag("--threads",
        { integer = true, min = 1 }))
    end,
    run = function(parsed)
      require("facet.clean").run(load_facet(), parsed)
      return 0
    end,
  },
}
M.commands = commands

--- The backbone of o.checkpoint as the file describes it, flags over it
-- (facet.backbone, as `facet embed` and `export` load it); returns the model
-- and its build options.
function M.load_model(facet, o) return require("facet.embed").load_model(facet, o) end

--- The `eval` command: builds the backbone, loads the weights, prints one table.
function M.evaluate(facet, o)
  if o.megaface then return M.evaluate_megaface(facet, o.megaface) end
  if o.ijb and o.features then
    -- InsightFace's img_feats: [image | mirror]; --no-flip keeps the image's half (ijb_11.py's use_flip_test off)
    local f = facet.load_npy(o.features)
    if f:dim() ~= 2 or f:size(2) % 2 ~= 0 then
      error(("--features: want N x 2d features [image | mirror], got shape %s"):format(table.concat(f:shape(), "x")), 0)
    end
    if o.no_flip then return M.evaluate_ijb(facet, o, f:narrow(2, 1, f:size(2) / 2):contiguous(), false) end
    return M.evaluate_ijb(facet, o, f, true)
  end
  if #o.bin == 0 and not o.ijb then error("give at least one --bin FILE, --ijb DIR or --megaface DIR", 0) end
  if not o.checkpoint then error("give a checkpoint (or --ijb DIR --features FILE.npy, or --megaface DIR)", 0) end
  local model, opts = M.load_model(facet, o)
  if o.ijb then
    if not o.images then error("--ijb with a checkpoint needs --images DIR (aligned crops) or use --features FILE.npy", 0) end
    local meta = facet.eval.ijb.read(o.ijb)
    local paths = {}
    for i, name in ipairs(meta.names) do paths[i] = o.images .. "/" .. name end
    return M.evaluate_ijb(facet, o, facet.eval.features(model, paths, { size = { opts.size, opts.size },
      flip = not o.no_flip }), false)
  end
  if opts.in_channels and opts.in_channels ~= 3 then
    -- recipes/quickstart.lua's convnet reads 1-channel Fashion-MNIST images
    error(("the model takes %d-channel images; verification .bin sets hold colour (3-channel) faces"):format(
      opts.in_channels), 0)
  end
  io.stdout:write(("%-24s %8s %10s %8s %12s %12s\n"):format("set", "pairs", "accuracy", "std", "TAR@FAR=1e-3",
    "TAR@FAR=1e-4"))
  for _, path in ipairs(o.bin) do
    local set = facet.data.load_bin(path, { size = { opts.size, opts.size } })
    io.stderr:write(("evaluating %s: %d pairs ...\n"):format(path, set.pairs))
    local r = facet.eval.verify_set(model, set, { flip = not o.no_flip, protocol = o.protocol })
    local function tar(f) return r.tar_at_far[f] and ("%.4f"):format(r.tar_at_far[f]) or "-" end
    local undef = r.undefined or {}
    io.stdout:write(("%-24s %8d %10s %8s %12s %12s\n"):format(path:match("[^/]*$"), set.pairs,
      undef.accuracy and "undefined" or ("%.4f"):format(r.accuracy), undef.accuracy and "-" or ("%.4f"):format(r.std),
      tar(1e-3), tar(1e-4)))
    for _, w in ipairs(r.warnings or {}) do io.stderr:write(("warning: %s: %s\n"):format(path, w)) end
  end
end

--- `eval --ijb DIR`: TAR at FAR 1e-6 ... 1e-1 over the template pairs.
function M.evaluate_ijb(facet, o, features, flip)
  local r = facet.eval.ijb.evaluate(o.ijb, features, { flip = flip })
  io.stdout:write(("%s: %d images, %d templates, %d pairs (%d genuine)\n"):format(r.target, r.images, r.templates,
    r.pairs, r.genuine))
  io.stdout:write("FAR      TAR\n")
  for _, far in ipairs(facet.eval.ijb.FARS) do
    io.stdout:write(("%-8g %s\n"):format(far, r.tar_at_far[far] and ("%.4f"):format(r.tar_at_far[far]) or "-"))
  end
  -- 1:N when the gallery and probe lists are there
  if facet.sys.exists(("%s/meta/%s_1N_probe_mixed.csv"):format(o.ijb, r.target)) then
    local n = facet.eval.ijb.identify(o.ijb, features, { flip = flip })
    local c = n.closed.cmc
    io.stdout:write(("1:N, %d probes, galleries of %d and %d: rank-1 %.4f rank-5 %s rank-10 %s\n"):format(n.probes,
      n.gallery[1], n.gallery[2], c[1], c[5] and ("%.4f"):format(c[5]) or "-", c[10] and ("%.4f"):format(c[10]) or "-"))
    for k = 1, 2 do
      local t = n.open[k].tpir_at_fpir
      io.stdout:write(("gallery %d: TPIR@FPIR=0.01 %s  TPIR@FPIR=0.1 %s\n"):format(k,
        t[1e-2] and ("%.4f"):format(t[1e-2]) or "-", t[1e-1] and ("%.4f"):format(t[1e-1]) or "-"))
    end
  end
end

--- `eval --megaface DIR`: rank-1 / CMC and TAR at FAR 1e-6 from embedding files.
function M.evaluate_megaface(facet, dir)
  local probes = facet.load_npy(dir .. "/probes.npy")
  local labels = facet.load_npy(dir .. "/probe_labels.npy")
  local distractors = facet.load_npy(dir .. "/distractors.npy")
  local id = facet.eval.identify(probes, labels, distractors, nil, { positives = probes })
  local v = facet.eval.verify_all(probes, labels, { distractors = distractors, fars = { 1e-6 } })
  io.stdout:write(("megaface: %d probes, %d distractors, %d trials\n"):format(probes:size(1), distractors:size(1), id.trials))
  io.stdout:write(("rank-1 %.4f  rank-10 %.4f  TAR@FAR=1e-6 %s\n"):format(id.rank1, id.cmc[10] or id.cmc[#id.cmc],
    v.tar_at_far[1e-6] and ("%.4f"):format(v.tar_at_far[1e-6]) or "- (fewer than 10^6 impostor pairs)"))
end

--- Prints what a file holds (the `info` command).
function M.describe_file(facet, path)
  local out = io.stdout
  if path:match("%.rec$") or path:match("%.idx$") then
    local prefix = path:gsub("%.rec$", ""):gsub("%.idx$", "")
    local r = facet.data.recordio(prefix)
    local labels = {}
    for i = 1, math.min(r:num_images(), 5) do labels[i] = r:label(i) end
    out:write(("%s.rec: RecordIO, %s layout, %d images, %d identities; first labels %s\n"):format(prefix, r:layout(),
      r:num_images(), r:num_identities(), table.concat(labels, " ")))
    if r:num_images() > 0 then
      local ok, info = pcall(facet.data.image_info, r:image_bytes(1))
      out:write(ok and ("first image: %s %dx%d, %d bytes\n"):format(info.format, info.width, info.height,
        #r:image_bytes(1)) or ("first image: %d bytes, not JPEG or PNG\n"):format(#r:image_bytes(1)))
    end
    local names = facet.data.read_lst(prefix)
    if names then
      local first, ids = {}, {}
      for key = 1, r:num_images() do
        local e = names[key]
        local id = e and e.path:match("([^/]+)/[^/]*$")
        if id and not ids[id] then
          ids[id] = true
          if #first < 5 then first[#first + 1] = id end
        end
      end
      out:write(("identity names (%s.lst): %s%s\n"):format(prefix, table.concat(first, ", "),
        r:num_identities() > #first and ", ..." or ""))
    end
  elseif path:match("%.bin$") then
    local b = facet.data.load_bin(path, { decode = false })
    local same = 0
    for _, v in ipairs(b.issame) do if v then same = same + 1 end end
    local ok, info = #b.images > 0 and pcall(facet.data.image_info, b.images[1])
    if not ok then info = nil end
    out:write(("%s: verification set, %d pairs (%d same, %d different), %d images%s\n"):format(path, b.pairs, same,
      b.pairs - same, #b.images, info and (", first %s %dx%d"):format(info.format, info.width, info.height) or ""))
  elseif path:match("%.npy$") then
    local t = facet.load_npy(path)
    out:write(("%s: NumPy array, %s, shape %s\n"):format(path, t:dtype(), table.concat(t:shape(), "x")))
  elseif path:match("%.safetensors$") then
    local t, meta = facet.load_safetensors(path)
    local names, total = {}, 0
    for k in pairs(t) do names[#names + 1] = k end
    table.sort(names)
    out:write(("%s: safetensors, %d tensors\n"):format(path, #names))
    for _, k in ipairs(names) do
      total = total + t[k]:numel()
      out:write(("  %-40s %-8s %s\n"):format(k, t[k]:dtype(), table.concat(t[k]:shape(), "x")))
    end
    out:write(("total: %d elements\n"):format(total))
    for k, v in pairs(meta) do out:write(("  metadata %s = %s\n"):format(k, v)) end
  elseif path:match("ubyte") or path:match("%.idx%d?") then
    local t = facet.data.load_idx(path)
    out:write(("%s: IDX, %s, shape %s\n"):format(path, t:dtype(), table.concat(t:shape(), "x")))
  else
    error(("%s: unknown kind of file (.rec, .idx, .bin, .npy, .safetensors, IDX *-ubyte)"):format(path), 0)
  end
end

local by_name = {}
for _, c in ipairs(commands) do by_name[c.name] = c end

--- What `facet --version` prints: the version, the commit of a checkout,
-- the backends built in, the BLAS in use, the threads and the CPU (facet.about).
function M.version_text()
  return table.concat(require("facet.about").lines(), "\n")
end

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
    local hint = "Run 'facet help' for the list of commands."
    -- `facet script.lua` is `facet run script.lua`, as `luajit script.lua` would be
    local first = list[1]
    if first and not by_name[first] and first:sub(1, 1) ~= "-" and
       (first:match("%.lua$") or io.open(first, "r")) then
      hint = ("To run a script: facet run %s%s"):format(first, #list > 1 and " ..." or "")
    end
    io.stderr:write(parser:get_usage(), "\n\nError: ", parsed, "\n", hint, "\n")
    return M.EXIT_USAGE
  end
  if parsed.version then
    load_facet()
    io.stdout:write(M.version_text(), "\n")
    return 0
  end
  local c = by_name[parsed.command or "repl"]
  -- a command's error is reported here, once, as "facet NAME: message"
  local ok, rc = xpcall(c.run, command_error, parsed, argv)
  if not ok then
    -- helpers called with the command's name as their prefix say it already
    local msg = tostring(rc)
    if msg:sub(1, #c.name + 2) == c.name .. ": " then msg = msg:sub(#c.name + 3) end
    io.stderr:write("facet ", c.name, ": ", msg, "\n")
    return M.EXIT_FAILURE
  end
  return rc or 0
end

return M
