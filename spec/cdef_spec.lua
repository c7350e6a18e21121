--- The LuaJIT cdef is generated from core/include/facet.h: check that the
-- generated file is what the header preprocesses to now, and that every
-- function the header declares is exported by the library.
local ffi = require "ffi"
local facet = require "facet"
local core = require "facet.core"

local build = os.getenv("FACET_BUILD") or "build"

local read = require("support.files").read_file

describe("generated cdef", function()
  it("equals the preprocessed header", function()
    local p = assert(io.popen("env -u LD_PRELOAD cc -E -P -DFACET_CDEF core/include/facet.h | luajit tools/gen_cdef.lua"))
    local fresh = p:read("*a")
    p:close()
    assert.is_true(#fresh > 1000)
    assert.are.equal(fresh, read(build .. "/lua/facet/cdef.lua"))
  end)

  it("declares every public function, and the library exports each", function()
    local header = read("core/include/facet.h")
    local names = {}
    for name in header:gmatch("\n[%w_ %*]-[%s%*](facet_[%w_]+)%s*%(") do names[#names + 1] = name end
    assert.is_true(#names >= 40, "found " .. #names .. " functions in the header")
    local cdef = require "facet.cdef"
    for _, name in ipairs(names) do
      assert.truthy(cdef:find(name .. "(", 1, true), name .. " missing from the cdef")
      assert.is_true(pcall(function() return core.C[name] end), name .. " not exported by facet_core.so")
    end
  end)

  it("exports exactly the header's functions, each marked FACET_API", function()
    local header = read("core/include/facet.h")
    local declared, n = {}, 0
    for line in header:gmatch("[^\n]+") do
      local name = line:match("^%a[%w_ %*]-[%s%*](facet_[%w_]+)%s*%(")
      if name then
        assert.truthy(line:match("^FACET_API "), name .. " is declared without FACET_API")
        declared[name], n = true, n + 1
      end
    end
    assert.is_true(n >= 90, "found " .. n .. " declarations")
    local p = assert(io.popen("nm -D --defined-only " .. build .. "/facet_core.so"))
    local exported, m = {}, 0
    for sym in p:read("*a"):gmatch("%s[TW]%s+(facet_[%w_]+)") do exported[sym], m = true, m + 1 end
    p:close()
    for name in pairs(exported) do assert.truthy(declared[name], name .. " is exported but not in facet.h") end
    for name in pairs(declared) do assert.truthy(exported[name], name .. " is in facet.h but not exported") end
    assert.are.equal(n, m)
  end)

  it("enum values carry their enum's prefix, and a COUNT member comes last", function()
    local header = read("core/include/facet.h")
    local enums = 0
    for tag, body in header:gmatch("enum%s+(facet_[%w_]+)%s*(%b{})") do
      enums = enums + 1
      local prefix = tag:upper() .. "_"
      local names = {}
      for name in body:gsub("/%*.-%*/", ""):gmatch("(FACET_[%w_]+)%s*=") do names[#names + 1] = name end
      assert.is_true(#names > 0, tag)
      for i, name in ipairs(names) do
        assert.are.equal(prefix, name:sub(1, #prefix), name .. " in enum " .. tag)
        if name:match("_COUNT$") then assert.are.equal(#names, i, name .. " is not last in enum " .. tag) end
      end
    end
    assert.is_true(enums >= 20, "found " .. enums .. " enums")
  end)

  it("constants arrive as enums and agree with the C side", function()
    assert.are.equal(8, tonumber(core.C.FACET_MAX_DIMS))
    assert.are.equal(4, tonumber(core.C.FACET_DTYPE_FLOAT16))
    local size = ffi.new("size_t[1]")
    assert.are.equal(0, core.C.facet_dtype_size(core.C.FACET_DTYPE_INT64, size))
    assert.are.equal(8, tonumber(size[0]))
    assert.are.equal(("%d.%d.%d"):format(core.C.FACET_VERSION_MAJOR, core.C.FACET_VERSION_MINOR,
      core.C.FACET_VERSION_PATCH), facet.version)
  end)

  it("the header stays FFI-clean: no macros, no structs by value", function()
    local header = read("core/include/facet.h")
    for line in header:gmatch("[^\n]+") do
      local define = line:match("^#define%s+([%w_]+)")
      assert.is_true(define == nil or define == "FACET_H" or define == "FACET_API",
        "macro constant in the header: " .. tostring(define))
    end
    assert.is_nil(header:find("%(%s*struct%s+[%w_]+%s+[%w_]+%s*[,%)]"), "struct passed by value")
  end)
end)
