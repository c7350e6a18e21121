--- facet.cuda.mark / Mark:record / facet.cuda.elapsed (facet_cuda_mark_*):
-- GPU timing marks. Without a GPU: clear errors naming the call; with one
-- (the cases marked [gpu]): marks recorded around real work read back a
-- finite, non-negative time, a mark can be recorded again, an unrecorded one
-- is refused. No speed is asserted (timing never goes into a test).
local ffi = require "ffi"
local facet = require "facet"
local core = require "facet.core"
local H = require "support.device"
local gpu_it = H.gpu_it

local C = core.C

describe("facet.cuda.mark", function()
  it("checks its arguments at the C boundary", function()
    H.assert_error(function() core.check(C.facet_cuda_mark_init(nil)) end, "facet_cuda_mark_init", "out is NULL")
    H.assert_error(function() core.check(C.facet_cuda_mark_record(nil)) end, "facet_cuda_mark_record", "mark is NULL")
    local ms = ffi.new("double[1]", -1)
    H.assert_error(function() core.check(C.facet_cuda_mark_elapsed(nil, nil, ms)) end, "facet_cuda_mark_elapsed",
      "start is NULL")
    H.assert_error(function() core.check(C.facet_cuda_mark_elapsed(nil, nil, nil)) end, "facet_cuda_mark_elapsed",
      "ms is NULL")
    assert.are.equal(-1, ms[0])
    assert.are.equal(0, C.facet_cuda_mark_free(nil))
  end)

  it("facet.cuda.elapsed takes two marks", function()
    H.assert_error(function() facet.cuda.elapsed(1, 2) end, "facet.cuda.elapsed", "a must be a facet.cuda.mark(), got a number")
    H.assert_error(function() facet.cuda.elapsed() end, "facet.cuda.elapsed", "got nothing")
  end)

  it("without a GPU, making a mark is a clear error", function()
    if facet.cuda.available() then
      pending("a CUDA device is present")
      return
    end
    local ok, err = pcall(facet.cuda.mark)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("facet_cuda_mark_init", 1, true), err)
  end)

  gpu_it("[gpu] marks around a GEMM: a finite time >= 0, recorded again, an unrecorded mark refused", function()
    local a, b, c = facet.cuda.mark(), facet.cuda.mark(), facet.cuda.mark()
    local x = facet.randn({ 512, 512 }, { seed = 1, device = "cuda" })
    a:record()
    local y = x:matmul(x)
    b:record()
    local ms = facet.cuda.elapsed(a, b)
    assert.is_true(ms >= 0 and ms < math.huge, tostring(ms))
    assert.are.same({ 512, 512 }, y:shape())
    b:record()    -- again: the later point
    assert.is_true(facet.cuda.elapsed(a, b) >= ms)
    H.assert_error(function() facet.cuda.elapsed(a, c) end, "facet_cuda_mark_elapsed", "the end mark was never recorded")
    H.assert_error(function() a.record(x) end, "facet.cuda.Mark:record", "call it with ':' on a mark")
  end)
end)
