--- facet.amp: the dynamic loss scaler and its fused unscale-and-check
-- (facet_amp_unscale). Values are powers of two where exactness matters, so
-- the expected numbers are written out by hand.

local facet = require "facet"
local H = require "support.device"
local amp = facet.amp

-- a float16 "gradient" of the given values, on the device under test
local function half(values) return H.tensor(values):half() end

describe("facet.amp.scaler", function()
  H.it("unscale divides every gradient by the scale and reports them finite", function()
    local s = amp.scaler { init_scale = 1024 }
    local g1 = H.tensor({ 1024, -2048, 3 })
    local g2 = half({ 512, 0.5 })
    local g3 = H.tensor({ 4096 }):bfloat16()
    assert.is_true(s:unscale({ g1, g2, g3 }))
    assert.are.same({ 1, -2, 3 / 1024 }, H.values(g1))
    assert.are.same({ 0.5, 2 ^ -11 }, H.values(g2:float()))
    assert.are.same({ 4 }, H.values(g3:float()))
    assert.are.equal("kept", s:update())
    assert.are.same({ 1024, 1, 0, 0 }, { s.scale, s.steps, s.skipped, s.found == nil and 0 or 1 })
  end)

  H.it("unscale and update allocate nothing per step", function()
    local s = amp.scaler { init_scale = 1, max_scale = 1 }   -- values that stay put over 600 steps
    local grads = {}
    for i = 1, 40 do grads[i] = H.tensor({ i, -i }) end
    local function steps(k)
      for _ = 1, k do
        assert(s:unscale(grads))
        s:update()
      end
    end
    steps(100)                                 -- the handle array, and compiled traces
    collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    steps(500)
    local kb = collectgarbage("count") - before
    collectgarbage("restart")
    -- a list or a "grads[i]" name per call would be 500 x 40 strings and 500 arrays (> 500 KB)
    assert.is_true(kb < 16, ("%.1f KB allocated by 500 steps"):format(kb))
    assert.are.same({ 40, -40 }, H.values(grads[40]))
    assert.are.same({ 600, 0 }, { s.steps, s.skipped })
  end)

  H.it("finds a NaN or inf in any tensor of the list, in any dtype", function()
    for _, case in ipairs {
      { dtype = "float32", bad = 1 / 0 }, { dtype = "float16", bad = 0 / 0 }, { dtype = "bfloat16", bad = -1 / 0 },
    } do
      local s = amp.scaler()
      local clean = H.tensor({ 1, 2, 3 })
      local g = H.tensor({ 1, 2, 3, 4, 5 }):to(case.dtype)
      g[4] = case.bad
      assert.is_false(s:unscale({ clean, g }), case.dtype)
      -- everything is still scaled (the step is skipped anyway)
      assert.are.same({ 2 ^ -16, 2 ^ -15, 3 * 2 ^ -16 }, H.values(clean))
      assert.are.equal("skipped", s:update())
    end
  end)

  H.it("a forced overflow halves the scale and skips exactly that step", function()
    -- w -= lr * grad with the true gradient 2^-20 each step; at step 4 the
    -- gradient is 2 (x 2^16 = 131072, past float16's 65504: inf)
    local s = amp.scaler { growth_interval = 3 }
    local w, lr, log = 1, 0.5, {}
    for step = 1, 8 do
      local g16 = half({ step == 4 and 2 or 2 ^ -20 })
      s:scale_grad(g16)                         -- what the backward pass would produce
      local g32 = g16:float()                   -- into the float32 master gradient
      local ok = s:unscale({ g32 })
      if ok then w = w - lr * g32:item() end
      log[step] = s:update() .. "@" .. s.scale
    end
    assert.are.same({ "kept@65536", "kept@65536", "grew@131072", "skipped@65536", "kept@65536", "kept@65536",
      "grew@131072", "kept@131072" }, log)
    assert.are.equal(1, s.skipped)
    assert.are.equal(8, s.steps)
    assert.are.equal(1 - 7 * lr * 2 ^ -20, w)    -- exactly seven updates
  end)

  H.it("scaling keeps a float16 gradient below 2^-24 from flushing to zero", function()
    -- the loss's gradient is float32 (the head stays float32); the backward
    -- pass below it runs in float16, where 2^-26 is below the smallest subnormal
    local s = amp.scaler()
    local tiny = 2 ^ -26
    assert.are.same({ 0 }, H.values(H.tensor({ tiny }):half():float()))   -- unscaled: lost
    local g16 = s:scale_grad(H.tensor({ tiny })):half()                     -- scaled: 2^-10
    local g32 = g16:float()
    assert.is_true(s:unscale({ g32 }))
    assert.are.same({ tiny }, H.values(g32))
    s:update()
    -- but a float16 value times the scale can itself overflow: 1 x 2^16 > 65504
    assert.is_false(s:unscale({ s:scale_grad(half({ 1 })) }))
    assert.are.equal("skipped", s:update())
  end)

  it("backs off no further than min_scale and then reports a divergence", function()
    local s = amp.scaler { init_scale = 4, min_scale = 1 }
    local results = {}
    for i = 1, 4 do
      s:unscale({ facet.tensor({ 0 / 0 }) })
      results[i] = s:update() .. "@" .. s.scale
    end
    assert.are.same({ "skipped@2", "skipped@1", "diverged@1", "diverged@1" }, results)
    assert.are.equal(4, s.skipped)
  end)

  it("grows up to max_scale and no further", function()
    local s = amp.scaler { init_scale = 2 ^ 15, max_scale = 2 ^ 16, growth_interval = 1 }
    local r = {}
    for i = 1, 3 do
      s:unscale({ facet.tensor({ 1 }) })
      r[i] = s:update() .. "@" .. s.scale
    end
    assert.are.same({ "grew@65536", "kept@65536", "kept@65536" }, r)
  end)

  it("disabled (bfloat16, float32): scale 1, gradients untouched, a non-finite one is a divergence", function()
    local s = amp.scaler { enabled = false }
    assert.are.equal(1, s.scale)
    local g = facet.tensor({ 3, 5 })
    assert.are.equal(g, s:scale_grad(g))
    assert.is_true(s:unscale({ g }))
    assert.are.same({ 3, 5 }, H.values(g))
    assert.are.equal("kept", s:update())
    for _ = 1, 150 do
      s:unscale({ g })
      s:update()
    end
    assert.are.equal(1, s.scale)
    assert.is_false(s:unscale({ facet.tensor({ 1 / 0 }) }))
    assert.are.equal("diverged", s:update())
  end)

  it("state_dict / load_state resume the same trajectory, through JSON", function()
    local json = require "facet.json"
    local function run(s, from, to, log)
      for step = from, to do
        local g = facet.tensor({ (step % 5 == 0) and 1e38 or 1 }):mul(s.scale)   -- overflow every 5th step
        s:unscale({ g })
        log[#log + 1] = s:update() .. "@" .. s.scale
      end
    end
    local straight, log_a = amp.scaler { growth_interval = 2 }, {}
    run(straight, 1, 12, log_a)
    local first, log_b = amp.scaler { growth_interval = 2 }, {}
    run(first, 1, 7, log_b)
    local saved = json.decode(json.encode(first:state_dict()))
    local resumed = amp.scaler { growth_interval = 2 }
    resumed:load_state(saved)
    run(resumed, 8, 12, log_b)
    assert.are.same(log_a, log_b)
    assert.are.same(straight:state_dict(), resumed:state_dict())
    assert.are.equal(2, resumed.skipped)
  end)

  it("refuses bad options, misuse and bad states with clear messages, changing nothing", function()
    H.assert_error(function() amp.scaler { init_scal = 2 } end, "facet.amp.scaler", "unknown option 'init_scal'")
    H.assert_error(function() amp.scaler { backoff_factor = 1 } end, "backoff_factor", "(0, 1)")
    H.assert_error(function() amp.scaler { init_scale = 2 ^ 30 } end, "init_scale must lie in")
    local s = amp.scaler()
    H.assert_error(function() s:update() end, "scaler:update", "no unscale()")
    H.assert_error(function() s:unscale(facet.tensor({ 1 })) end, "scaler:unscale", "list of tensors")
    H.assert_error(function() s:unscale({ facet.tensor({ 1 }, { dtype = "int32" }) }) end,
      "facet_amp_unscale", "grads[0]", "int32")
    H.assert_error(function() s:unscale({ facet.zeros({ 3, 4 }):narrow(2, 1, 2) }) end, "facet_amp_unscale", "not contiguous")
    local a = facet.tensor({ 4 })
    H.assert_error(function() s:unscale({ a, facet.tensor({ 1 }, { dtype = "int64" }) }) end, "grads[1]", "int64")
    assert.are.same({ 4 }, H.values(a))                                -- checked before anything is written
    s:unscale({ a })
    H.assert_error(function() s:unscale({ a }) end, "called twice")
    s:update()
    local before = s:state_dict()
    local bad = s:state_dict()
    bad.scale = -1
    H.assert_error(function() s:load_state(bad) end, "scaler:load_state", "scale must be")
    bad = s:state_dict()
    bad.skipped = 5
    H.assert_error(function() s:load_state(bad) end, "skipped (5) exceeds steps (1)")
    bad = s:state_dict()
    bad.enabled = false
    H.assert_error(function() s:load_state(bad) end, "enabled = false")
    bad = s:state_dict()
    bad.extra = 1
    H.assert_error(function() s:load_state(bad) end, "unknown option 'extra'")
    assert.are.same(before, s:state_dict())
  end)
end)
