--- summary.lua: busted output handler for `make test`. Prints one line per
-- spec file (with its wall time, so a CI run that grows shows where), every
-- failure with its message, the skipped cases with their reason, and closes with exactly `N passed, N failed` (C unit tests included,
-- read from the file named by FACET_CTEST_COUNTS).
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local out = io.stdout
  local current_file, file_counts = nil, nil
  -- a monotonic clock when facet.sys loads (it always does in the checkout)
  local ok_sys, sys = pcall(require, "facet.sys")
  local clock = ok_sys and sys.clock or os.time
  local file_start = clock()

  local function flush_file()
    if current_file then
      local now = clock()
      out:write(("%-40s %3d passed  %d failed  %d skipped  %6.1f s\n"):format(current_file, file_counts.ok,
        file_counts.bad, file_counts.skip, now - file_start))
      file_start = now
    end
  end

  -- the spec file a test belongs to (its trace may point into a helper)
  local function file_of(element)
    local e = element
    while e do
      if e.descriptor == "file" then return e.name end
      e = busted.parent(e)
    end
    return element.trace and element.trace.short_src or "?"
  end

  local function note(element, kind)
    local src = file_of(element)
    if src ~= current_file then
      flush_file()
      current_file, file_counts = src, { ok = 0, bad = 0, skip = 0 }
    end
    file_counts[kind] = file_counts[kind] + 1
  end

  local function describe_failure(t)
    local msg = t.message
    if type(msg) ~= "string" then msg = require("pl.pretty").write(msg) end
    -- a file that fails to load (missing, a syntax error) has a trace without a line
    local tr = t.element and t.element.trace
    local where = tr and (tostring(tr.short_src) .. ":" .. tostring(tr.currentline or "?")) or "?"
    return ("FAILED %s\n  at %s\n  %s\n"):format(t.name or "?", where, (msg or "nil"):gsub("\n", "\n  "))
  end

  local failures_text = {}

  handler.testEnd = function(element, parent, status)
    if status == "success" then note(element, "ok")
    elseif status == "pending" then note(element, "skip")
    else
      note(element, "bad")
      local list = status == "failure" and handler.failures or handler.errors
      failures_text[#failures_text + 1] = describe_failure(list[#list])
    end
    return nil, true
  end

  handler.error = function(element)
    if element.descriptor ~= "it" then
      failures_text[#failures_text + 1] = describe_failure(handler.errors[#handler.errors])
    end
    return nil, true
  end

  handler.suiteEnd = function()
    flush_file()
    local passed = #handler.successes
    local failed = #handler.failures + #handler.errors
    for _, t in ipairs(handler.pendings) do
      out:write(("skipped: %s%s\n"):format(t.name, t.message and t.message ~= t.name and (" (" .. t.message .. ")") or ""))
    end
    for _, text in ipairs(failures_text) do out:write(text) end
    local counts = os.getenv("FACET_CTEST_COUNTS")
    local f = counts and io.open(counts)
    if f then
      local cp, cf = f:read("*n", "*n")
      f:close()
      if cp and cf then
        out:write(("C unit tests: %d passed, %d failed\n"):format(cp, cf))
        passed, failed = passed + cp, failed + cf
      end
    end
    out:write(("%d skipped\n"):format(#handler.pendings))
    out:write(("%d passed, %d failed\n"):format(passed, failed))
    out:flush()
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "error" }, handler.error)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end
