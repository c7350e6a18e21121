--- Hostile input to tensors: every case runs in its own fresh process
-- (support/fresh.lua) and must end with a clean Lua error naming the problem,
-- or with the right values: never a crash, a sanitizer report or a hang.
--   1. size arithmetic: products and sums of sizes that overflow, shapes past
--      what can be allocated, negative sizes, too many dims, views out of range;
--   2. in-place ops on overlapping memory: inputs read as they were before
--      the call (the same view in place keeps working);
--   3. values out of an integer dtype's range: one rule, an error;
--   4. (images: hostile_image_spec.lua);
--   5. self-referential and ragged tables given to facet.tensor.
-- Cases that go through the C API directly (facet.core.C) check the C
-- boundary itself, where the Lua layer would refuse first.
local Fresh = require "support.fresh"
local H = require "support.device"

local E = Fresh.assert_error

-- a case that checks values: code prints with show(), `want` is one array
-- per show() call
local function values(code, ...)
  local got = Fresh.values(code)
  local want = { ... }
  assert.are.same(want, got, code)
end

local function dev(code) return (code:gsub("DEVOPT", "{ device = DEV }")) end

describe("hostile sizes", function()
  describe("creation", function()
    it("a product of sizes past int64 is ERR_MEMORY naming the bytes", function()
      E("facet.empty({2^31, 2^31, 2^31})", "facet_tensor_init", "[2147483648x2147483648x2147483648 float32]",
        "is too large", "bytes")
    end)
    it("a byte count past size_t (numel fits int64) is refused", function()
      E("facet.zeros({2^62})", "facet_tensor_init", "too large", "about 1.84e+19 bytes")
    end)
    it("int64 elements: 2^61 of them need 2^64 bytes", function()
      E("facet.empty({2^61}, { dtype = 'int64' })", "too large", "int64")
    end)
    it("a shape past 2^47 bytes is refused before any allocation", function()
      E("facet.empty({2^20, 2^20, 2^10})", "facet_tensor_init", "4503599627370496 bytes",
        "more than the 140737488355328 (2^47)")
    end)
    it("an empty shape whose strides would overflow is refused", function()
      E("facet.empty({0, 2^31, 2^31})", "facet_tensor_init", "empty, but its sizes span")
    end)
    it("an empty shape is bounded as if its zero sizes were 1 (no partial product can overflow)", function()
      E("facet.empty({2^40, 2^40, 0})", "facet_tensor_init", "empty, but its sizes span about 4.84e+24 bytes")
      values("local t = facet.empty({0, 2^20, 2^20}); show(facet.tensor({ t:numel(), t:dim() }))", { 0, 3 })
    end)
    it("full with huge sizes", function()
      E("facet.full({2^40, 2^40}, 1)", "too large")
    end)
    it("arange with an enormous count", function()
      E("facet.arange(0, 2^62)", "facet_tensor_init", "too large")
    end)
    it("arange to infinity", function()
      E("facet.arange(0, math.huge)", "arange", "finite", "inf")
    end)
    it("a size of 1e30 (no int64 holds it)", function()
      E("facet.zeros({1e30})", "size 1 is 1e+30", "below 2^63")
    end)
    it("an infinite size", function()
      E("facet.zeros({3, math.huge})", "size 2 is inf")
    end)
    it("a NaN size", function()
      E("facet.empty({0/0})", "size 1 is nan")
    end)
    it("a negative size", function()
      E("facet.zeros({2, -1})", "size 2 is -1", "non-negative")
    end)
    it("a fractional size", function()
      E("facet.ones({2.5})", "size 1 is 2.5")
    end)
    it("9 dims (more than FACET_MAX_DIMS)", function()
      E("facet.zeros({1, 1, 1, 1, 1, 1, 1, 1, 1})", "9 dims given, at most 8")
    end)
    it("C: facet_tensor_init with ndim 9", function()
      E("check(C.facet_tensor_init(outp, 0, 0, 9, ffi.new('int64_t[9]', {1,1,1,1,1,1,1,1,1})))",
        "facet_tensor_init", "ndim 9 outside [0, 8]")
    end)
    it("C: facet_tensor_init with sizes INT64_MAX x 2", function()
      E("check(C.facet_tensor_init(outp, 0, 0, 2, ffi.new('int64_t[2]', {0x7fffffffffffffffLL, 2})))",
        "facet_tensor_init", "[9223372036854775807x2 float32] is too large")
    end)
    it("C: facet_tensor_init with INT64_MIN: the dim is counted from 1", function()
      E("check(C.facet_tensor_init(outp, 0, 0, 3, ffi.new('int64_t[3]', {2, 3, -0x7fffffffffffffffLL - 1})))",
        "facet_tensor_init", "size -9223372036854775808 of dim 3 is negative")
    end)
    it("an allocation that fails is ERR_MEMORY with the bytes asked", function()
      -- 2^45 bytes: under the 2^47 limit, past any machine's memory (and past
      -- what AddressSanitizer lets malloc return, hence its option)
      local f = io.open("/proc/sys/vm/overcommit_memory")
      local mode = f and f:read("*l")
      if f then f:close() end
      if mode == "1" then
        pending("vm.overcommit_memory = 1: the kernel promises any allocation")
        return
      end
      -- called from a Lua function, whose line the message names
      local out, rc = Fresh.run("local ok, e = pcall(function() local t = facet.empty({2^43}); return t end); " ..
        "print(ok, e)",
        'ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"')
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("false\t(command line)", 1, true), out)
      assert.truthy(out:find("facet_tensor_init: out of memory allocating [8796093022208 float32 cpu] " ..
        "(35184372088832 bytes)", 1, true), out)
    end)
  end)

  describe("views", function()
    it("narrow: start + length past int64", function()
      E("facet.ones({3}):narrow(1, 2, 2^62)", "narrow: start 2 and length 4611686018427387904 run past size 3 of dim 1")
    end)
    it("narrow: a start past the end", function()
      E("facet.ones({3, 4}):narrow(2, 6, 0)", "run past size 4 of dim 2")
    end)
    it("narrow: a fractional start", function()
      E("facet.ones({3}):narrow(1, 1.5, 1)", "narrow: start is 1.5")
    end)
    it("narrow: a NaN length", function()
      E("facet.ones({3}):narrow(1, 1, 0/0)", "narrow: length is nan")
    end)
    it("C: narrow with length INT64_MAX (start + length overflows)", function()
      E("check(C.facet_tensor_narrow(outp, facet.ones({3}).h, 0, 1, 0x7fffffffffffffffLL))", "facet_tensor_narrow",
        "length 9223372036854775807 outside [0, 2] for start 1 on dim 1")
    end)
    it("C: narrow with start and length INT64_MAX", function()
      E("check(C.facet_tensor_narrow(outp, facet.ones({2, 3}).h, 1, 0x7fffffffffffffffLL, 0x7fffffffffffffffLL))",
        "start 9223372036854775807 outside [0, 3] for dim 2 of [2x3 float32 cpu]")
    end)
    it("C: narrow with a negative start", function()
      E("check(C.facet_tensor_narrow(outp, facet.ones({3}).h, 0, -1, 1))", "start -1 outside [0, 3]")
    end)
    it("C: narrow with a negative length", function()
      E("check(C.facet_tensor_narrow(outp, facet.ones({3}).h, 0, 1, -1))", "length -1 outside [0, 2]")
    end)
    it("select: index 0 and past the end", function()
      E("facet.ones({3}):select(1, 0)", "select: index 0 out of range for dim 1 of size 3")
      E("facet.ones({2, 3}):select(2, 4)", "select: index 4 out of range for dim 2 of size 3")
    end)
    it("C: select with INT64_MIN", function()
      E("check(C.facet_tensor_select(outp, facet.ones({2, 3}).h, 1, -0x7fffffffffffffffLL - 1))",
        "facet_tensor_select", "index -9223372036854775808 outside [0, 3) of dim 2 of [2x3 float32 cpu]")
    end)
    it("C: select on a dim that does not exist", function()
      E("check(C.facet_tensor_select(outp, facet.ones({2, 3}).h, 5, 0))", "dim 5 out of range", "want 0 to 1")
    end)
    it("C: get names the dim counted from 1", function()
      E("check(C.facet_tensor_get(facet.ones({2, 3}).h, ffi.new('int64_t[2]', {1, 3}), ffi.new('double[1]')))",
        "facet_tensor_get", "index 3 outside [0, 3) of dim 2")
    end)
    it("reshape with two -1", function()
      E("facet.ones({6}):reshape{-1, -1}", "facet_tensor_reshape", "sizes of dims 1 and 2 are both -1")
    end)
    it("reshape: -1 beside a zero size", function()
      E("facet.ones({0}):reshape{0, -1}", "cannot infer the size of dim 2", "the other sizes give 0")
    end)
    it("reshape: -1 when the other sizes overflow int64", function()
      E("facet.ones({4}):reshape{2^62, 4, -1}", "cannot infer the size of dim 3", "more than 9223372036854775807")
    end)
    it("reshape: sizes whose product overflows to the element count", function()
      -- 2^62 * 2^62 * 4 wraps to 0 in int64, 2^32 * 2^32 * 4 to 4 bits of trouble
      E("facet.ones({4}):reshape{2^32, 2^32, 4}", "facet_tensor_reshape", "has 4 elements, the new shape more than")
    end)
    it("reshape: an empty tensor to a shape whose strides overflow", function()
      E("facet.ones({0}):reshape{0, 2^31, 2^31}", "facet_tensor_reshape", "empty, but its sizes span")
    end)
    it("reshape: a size below -1", function()
      E("facet.ones({4}):reshape{-2, -2}", "reshape: size 1 is -2")
    end)
    it("reshape: a fractional size", function()
      E("facet.ones({4}):reshape{1.5, 2}", "reshape: size 1 is 1.5")
    end)
    it("C: reshape with a size below -1 names the dim from 1", function()
      E("check(C.facet_tensor_reshape(outp, facet.ones({4}).h, 2, ffi.new('int64_t[2]', {2, -3})))",
        "size -3 of dim 2: want a size >= 0, or -1")
    end)
    it("C: reshape with ndim 9", function()
      E("check(C.facet_tensor_reshape(outp, facet.ones({1}).h, 9, ffi.new('int64_t[9]', {1,1,1,1,1,1,1,1,1})))",
        "ndim 9 outside [0, 8]")
    end)
  end)
end)

describe("hostile overlap: in-place ops read their inputs as before the call", function()
  H.it("copy into a view shifted right by one", function()
    values(dev("local a = facet.arange(10, DEVOPT); a:narrow(1, 2, 9):copy(a:narrow(1, 1, 9)); show(a)"),
      { 0, 0, 1, 2, 3, 4, 5, 6, 7, 8 })
  end)
  H.it("copy into a view shifted left by one", function()
    values(dev("local a = facet.arange(10, DEVOPT); a:narrow(1, 1, 9):copy(a:narrow(1, 2, 9)); show(a)"),
      { 1, 2, 3, 4, 5, 6, 7, 8, 9, 9 })
  end)
  H.it("copy of an int32 tensor into itself shifted (raw element moves)", function()
    values(dev("local a = facet.arange(6, { dtype = 'int32', device = DEV }); a:narrow(1, 2, 5):copy(a:narrow(1, 1, 5)); show(a)"),
      { 0, 0, 1, 2, 3, 4 })
  end)
  H.it("copy of a transposed view of the same storage transposes in place", function()
    values(dev("local m = facet.arange(9, DEVOPT):view{3, 3}; check(C.facet_tensor_permute_view(outp, m.h, " ..
      "ffi.new('int[2]', {1, 0}))); m:copy(wrap(outp[0])); show(m)"), { 0, 3, 6, 1, 4, 7, 2, 5, 8 })
  end)
  H.it("copy between overlapping views of different shapes (flat copy)", function()
    values(dev("local a = facet.arange(8, DEVOPT); a:narrow(1, 3, 6):view{2, 3}:copy(a:narrow(1, 1, 6)); show(a)"),
      { 0, 1, 0, 1, 2, 3, 4, 5 })
  end)
  H.it("copy of a tensor onto itself keeps it", function()
    values(dev("local a = facet.arange(4, DEVOPT); a:copy(a); show(a)"), { 0, 1, 2, 3 })
  end)
  H.it("add_ of a row of the same tensor (broadcast)", function()
    values(dev("local x = facet.arange(12, DEVOPT):view{4, 3}; x:add_(x[2]); show(x)"),
      { 3, 5, 7, 6, 8, 10, 9, 11, 13, 12, 14, 16 })
  end)
  H.it("sub_ of the same tensor shifted", function()
    values(dev("local a = facet.arange(1, 6, DEVOPT); a:narrow(1, 2, 4):sub_(a:narrow(1, 1, 4)); show(a)"),
      { 1, 1, 1, 1, 1 })
  end)
  H.it("int32 add_ of the same tensor shifted", function()
    values(dev("local a = facet.arange(5, { dtype = 'int32', device = DEV }); a:narrow(1, 2, 4):add_(a:narrow(1, 1, 4)); show(a)"),
      { 0, 1, 3, 5, 7 })
  end)
  H.it("a unary op from a shifted view of its output", function()
    values(dev("local a = facet.arange(1, 6, DEVOPT); check(C.facet_tensor_unary(a:narrow(1, 2, 4).h, " ..
      "a:narrow(1, 1, 4).h, C.FACET_UNARY_NEG, 0, 0)); show(a)"), { 1, -1, -2, -3, -4 })
  end)
  H.it("axpy_ with y a shifted view of out", function()
    values(dev("local a = facet.arange(1, 6, DEVOPT); a:narrow(1, 2, 4):axpy_(2, a:narrow(1, 1, 4)); show(a)"),
      { 1, 4, 7, 10, 13 })
  end)
  H.it("the same view in place keeps working: mul_(x), add_(x), neg_()", function()
    values(dev("local x = facet.arange(5, DEVOPT); x:mul_(x); show(x); x:add_(x); show(x); " ..
      "local y = facet.arange(1, 5, DEVOPT); y:neg_(); show(y)"),
      { 0, 1, 4, 9, 16 }, { 0, 2, 8, 18, 32 }, { -1, -2, -3, -4 })
  end)
  H.it("index_copy_ between overlapping row blocks of one tensor", function()
    values(dev("local x = facet.arange(8, DEVOPT):view{4, 2}; local idx = facet.tensor({1, 2}, { dtype = 'int64', device = DEV }); " ..
      "x:narrow(1, 2, 2):index_copy_(idx, x:narrow(1, 1, 2)); show(x)"), { 0, 1, 0, 1, 2, 3, 6, 7 })
  end)
  H.it("index_add_ of a tensor into itself", function()
    values(dev("local x = facet.arange(4, DEVOPT):view{2, 2}; x:index_add_(facet.tensor({2, 1}, { dtype = 'int32', device = DEV }), x); show(x)"),
      { 2, 4, 2, 4 })
  end)
  H.it("index_select into rows of its own source", function()
    values(dev("local x = facet.arange(6, DEVOPT):view{3, 2}; check(C.facet_tensor_index_select(x:narrow(1, 2, 2).h, x.h, " ..
      "facet.tensor({1, 2}, { dtype = 'int64', device = DEV }).h, 1)); show(x)"), { 0, 1, 0, 1, 2, 3 })
  end)
  H.it("scatter_ with values taken from the destination", function()
    values(dev("local m = facet.arange(9, DEVOPT):view{3, 3}; m:scatter_(facet.tensor({3, 1, 2}, { dtype = 'int64', device = DEV }), " ..
      "m:view{-1}:narrow(1, 1, 3)); show(m)"), { 0, 1, 0, 1, 4, 5, 6, 2, 8 })
  end)
  H.it("gather into part of its own source", function()
    values(dev("local m = facet.arange(9, DEVOPT):view{3, 3}; check(C.facet_tensor_gather_cols(m:view{-1}:narrow(1, 4, 3).h, m.h, " ..
      "facet.tensor({3, 1, 1}, { dtype = 'int32', device = DEV }).h, 1)); show(m)"), { 0, 1, 2, 2, 3, 6, 6, 7, 8 })
  end)
  H.it("permute into its own storage", function()
    values(dev("local m = facet.arange(6, DEVOPT):view{2, 3}; check(C.facet_tensor_permute(m:view{3, 2}.h, m.h, " ..
      "ffi.new('int[2]', {1, 0}))); show(m)"), { 0, 3, 1, 4, 2, 5 })
  end)
end)

describe("hostile conversions: a value out of an integer dtype's range is an error", function()
  it("facet.tensor: 1e10 into int32", function()
    E("facet.tensor({1e10}, { dtype = 'int32' })", "facet.tensor: value 10000000000 (element 1", "out of range for int32",
      "[-2147483648, 2147483647]")
  end)
  it("facet.tensor: 256 and -1 into uint8", function()
    E("facet.tensor({0, 255, 256}, { dtype = 'uint8' })", "value 256 (element 3", "uint8", "[0, 255]")
    E("facet.tensor({-1}, { dtype = 'uint8' })", "value -1 (element 1", "uint8")
  end)
  it("facet.tensor: NaN and inf into integers", function()
    E("facet.tensor({1, 0/0}, { dtype = 'int64' })", "value nan (element 2", "cannot be stored in int64", "not a finite number")
    E("facet.tensor({-math.huge}, { dtype = 'int32' })", "value -inf (element 1", "int32")
  end)
  it("facet.tensor: 2^63 into int64 (and -2^63 fits)", function()
    E("facet.tensor({2^63}, { dtype = 'int64' })", "out of range for int64")
    values("show(facet.tensor({-2^63, 2^62}, { dtype = 'int64' }):eq(facet.tensor({-2^63, 2^62}, { dtype = 'int64' })))",
      { 1, 1 })
  end)
  it("facet.tensor of a number goes through fill", function()
    E("facet.tensor(1e10, { dtype = 'int32' })", "facet_tensor_fill: value 1e+10 is out of range for int32")
  end)
  H.it("to('int32') of 1e10", function()
    E(dev("facet.tensor({1, 1e10}):to(DEV):int()"), "facet_tensor_copy: value 1e+10 (element 2 of src [2 float32",
      "out of range for int32")
  end)
  H.it("byte() of 300 and of -2.7", function()
    E(dev("facet.tensor({1, 2, 300}):to(DEV):byte()"), "value 300 (element 3", "out of range for uint8")
    E(dev("facet.tensor({-2.7}):to(DEV):byte()"), "value -2.7 (element 1", "[0, 255]")
  end)
  H.it("long() of NaN", function()
    E(dev("facet.tensor({0/0}):to(DEV):long()"), "value nan (element 1", "cannot be stored in int64")
  end)
  H.it("in-range values still truncate toward zero", function()
    values(dev("local f = facet.tensor({-2.9, -0.9, 0.9, 2.9, 255.5}):to(DEV); show(f:int()); show(f:narrow(1, 2, 4):byte())"),
      { -2, 0, 0, 2, 255 }, { 0, 0, 2, 255 })
  end)
  H.it("int64 to int32 and int32 to uint8 check too; uint8 to int32 never fails", function()
    E(dev("facet.tensor({2^40}, { dtype = 'int64' }):to(DEV):int()"), "value 1099511627776", "int32")
    E(dev("facet.tensor({7, -1}, { dtype = 'int32' }):to(DEV):byte()"), "value -1 (element 2", "uint8")
    values(dev("show(facet.tensor({0, 255}, { dtype = 'uint8' }):to(DEV):int())"), { 0, 255 })
  end)
  H.it("a strided source names the element in row-major order", function()
    E(dev("facet.tensor({{1, 2}, {3, 1e10}}):to(DEV):select(2, 2):int()"), "(element 2 of src [2 float32")
  end)
  H.it("a failed conversion writes nothing", function()
    values(dev("local t = facet.zeros({3}, { dtype = 'int32', device = DEV }); assert(not pcall(t.copy, t, facet.tensor({1, 2, 1e10}))); show(t)"),
      { 0, 0, 0 })
  end)
  H.it("fill_ with out-of-range values and NaN", function()
    E(dev("facet.zeros({2}, { dtype = 'uint8', device = DEV }):fill_(-1)"), "facet_tensor_fill: value -1 is out of range for uint8")
    E(dev("facet.zeros({2}, { dtype = 'int32', device = DEV }):fill_(0/0)"), "facet_tensor_fill: value nan cannot be stored in int32")
    E(dev("facet.full({2}, 2^31, { dtype = 'int32', device = DEV })"), "value 2147483648 is out of range for int32")
  end)
  H.it("set: 2^31 into int32 (2^31 - 1 fits)", function()
    E(dev("facet.zeros({2}, { dtype = 'int32', device = DEV }):set(2^31, 1)"), "facet_tensor_set: value 2147483648")
    values(dev("local t = facet.zeros({2}, { dtype = 'int32', device = DEV }); t:set(2^31 - 1, 2); t:set(-2^31, 1); show(t)"),
      { -2147483648, 2147483647 })
  end)
  H.it("arange past uint8 and below int32", function()
    E(dev("facet.arange(0, 300, { dtype = 'uint8', device = DEV })"), "facet_tensor_arange: the last value",
      "299 is out of range for uint8")
    E(dev("facet.arange(-2^31 - 10, 0, 5, { dtype = 'int32', device = DEV })"), "facet_tensor_arange: start -2147483658")
    values(dev("show(facet.arange(250, 256, { dtype = 'uint8', device = DEV }))"), { 250, 251, 252, 253, 254, 255 })
  end)
end)

describe("hostile tables given to facet.tensor", function()
  it("a table that holds itself", function()
    E("local t = {}; t[1] = t; facet.tensor(t)", "facet.tensor: the table is nested more than 8 deep",
      "does it contain itself?")
  end)
  it("a table that holds itself further in", function()
    E("local t = {1, 2}; t[3] = t; facet.tensor(t)", "tensor data must be numbers, found table at data[3]")
    E("local t = {{1}, {2}}; t[2][1] = t; facet.tensor(t)", "found table at data[2][1]")
  end)
  it("an __index that returns the table itself", function()
    E("local t = setmetatable({}, { __index = function(t) return t end }); facet.tensor(t)", "nested more than 8 deep")
  end)
  it("ragged rows", function()
    E("facet.tensor{{1, 2}, {3}}", "ragged table: data[2] should be a table of 2 entries, found 1 entries")
    E("facet.tensor{{1, 2}, 3}", "ragged table: data[2] should be a table of 2 entries, found number")
    E("facet.tensor{{{1}, {2}}, {{3}, {4, 5}}}", "ragged table: data[2][2]")
  end)
  it("numbers where tables are and strings, nil, tensors where numbers are", function()
    E("facet.tensor{1, {2}}", "found table at data[2]")
    E("facet.tensor{1, '2'}", "found string at data[2]")
    E("facet.tensor{nil, 2}", "found nil at data[1]")
    E("facet.tensor{facet.ones({1})}", "found cdata at data[1]")
  end)
  it("9 levels of nesting; 8 are fine", function()
    E("facet.tensor{{{{{{{{{1}}}}}}}}}", "nested more than 8 deep")
    values("show(facet.tensor{{{{{{{{1}}}}}}}}:view{-1})", { 1 })
  end)
end)
