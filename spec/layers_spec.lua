--- Layers only look down: the requires among lua/facet's modules (read from
-- the source, requires inside functions included) form no cycle, so no layer
-- reaches for the package above it (facet.train for `facet`, nn/SE.lua for
-- facet.nn ...). Only the front ends (facet.cli, facet.repl, facet.recipe)
-- load the whole `facet`.
local lfs = require "lfs"

local function modules()
  local mods = {}
  local function walk(dir, prefix)
    for n in lfs.dir(dir) do
      local p = dir .. "/" .. n
      if n ~= "." and n ~= ".." and lfs.attributes(p, "mode") == "directory" then
        walk(p, prefix .. n .. ".")
      elseif n:match("%.lua$") then
        local name = (prefix .. n:gsub("%.lua$", "")):gsub("%.init$", "")
        local f = assert(io.open(p))
        local src = f:read("*a"):gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", "")   -- comments out
        f:close()
        local deps = {}
        for r in src:gmatch("require%s*%(?%s*[\"'](facet[%w%._]*)[\"']") do deps[#deps + 1] = r end
        mods[name] = deps
      end
    end
  end
  walk("lua/facet", "facet.")
  return mods
end

describe("module layers", function()
  it("the requires among facet's modules have no cycle", function()
    local mods = modules()
    assert.truthy(mods["facet.nn.SE"] and mods["facet.train"] and mods["facet"], "lua/facet not found")
    local state, cycles = {}, {}
    local function visit(m, path)
      if state[m] == "open" then
        local from = 1
        for i, p in ipairs(path) do if p == m then from = i end end
        cycles[#cycles + 1] = table.concat(path, " -> ", from) .. " -> " .. m
        return
      end
      if state[m] then return end
      state[m], path[#path + 1] = "open", m
      for _, d in ipairs(mods[m] or {}) do visit(d, path) end
      state[m], path[#path] = "done", nil
    end
    local names = {}
    for m in pairs(mods) do names[#names + 1] = m end
    table.sort(names)
    for _, m in ipairs(names) do visit(m, {}) end
    assert.are.same({}, cycles)
  end)

  it("only the front ends load the whole facet package", function()
    local front = { ["facet.cli"] = true, ["facet.repl"] = true, ["facet.recipe"] = true }
    local offenders = {}
    for m, deps in pairs(modules()) do
      for _, d in ipairs(deps) do
        if d == "facet" and not front[m] then offenders[#offenders + 1] = m end
      end
    end
    table.sort(offenders)
    assert.are.same({}, offenders)
  end)
end)
