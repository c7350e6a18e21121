--- facet.models.vit (arcface_torch's VisionTransformer): its state_dict
-- names, shapes and parameter counts against the PyTorch port in
-- tools/make_pth_fixtures.py, its options, the random token masking
-- (nn.TokenMask) by hand, its gradients by finite differences, and its
-- 16-bit runs (Module:set_fp32 on the final norm and feature head) against
-- float32 and under facet.train{ precision = }.
local H = require "support.device"
local F = require "support.files"
local J = require "support.jacobian"
local facet = H.facet
local nn = facet.nn

local HAVE_TORCH = select(2, F.sh(F.PY .. " -c 'import torch'")) == 0

local function small(extra)
  local o = { dim = 16, depth = 2, heads = 4, size = 36, emb = 8, drop_path = 0, mask_ratio = 0 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return facet.models.vit(o)
end

describe("facet.models.vit", function()
  it("names, dtypes and shapes equal the PyTorch port's state_dict; vit_t's parameter count equals PyTorch's", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local dir = H.temp_dir()
    local out, rc = F.sh(("%s tools/make_pth_fixtures.py keys %s"):format(F.PY, dir))
    assert.are.equal(0, rc, out)
    -- every "name dtype shape" line of PyTorch's state_dict is one of the model's entries, and no other
    local sd, seen = facet.models.vit { dim = 64, depth = 2 }:state_dict(), 0
    for line in F.read_file(dir .. "/vit_keys.txt"):gmatch("[^\n]+") do
      local name, dtype, shape = line:match("^(%S+) (%S+) (%S+)$")
      local t = sd[name]
      assert.is_not_nil(t, name .. " is missing from facet's model")
      assert.are.equal(dtype, t:dtype(), name)
      assert.are.equal(shape, t:dim() == 0 and "scalar" or table.concat(t:shape(), "x"), name)
      seen = seen + 1
    end
    H.remove_dir(dir)
    local n = 0
    for _ in pairs(sd) do n = n + 1 end
    assert.are.equal(seen, n)
    local count
    count, rc = F.sh(("%s tools/make_pth_fixtures.py count vit_t"):format(F.PY))
    assert.are.equal(0, rc, count)
    local m = facet.models.build("vit", { variant = "t" })
    assert.are.equal(tonumber(count:match("%d+")), m:count_parameters())
    assert.are.equal(19137792, m:count_parameters())
  end)

  it("its random layers draw their own numbers: two drop paths of a block, and the blocks, differ", function()
    local net = facet.models.vit { dim = 16, depth = 4, heads = 2, size = 27, emb = 8, drop_path = 0.5, mask_ratio = 0 }
    net:train()
    net:forward(facet.randn({ 16, 3, 27, 27 }, { seed = 2 }))
    local masks = {}
    local function visit(m)
      if getmetatable(m) == facet.nn.DropPath and m.p > 0 then
        local v = H.values(m.buffers.scale)
        for i = 1, #v do v[i] = v[i] ~= 0 and 1 or 0 end
        masks[#masks + 1] = table.concat(v)
      end
      for _, c in ipairs(m:children()) do visit(c) end
    end
    visit(net)
    assert.are.equal(6, #masks)       -- blocks 1 to 3, two drop paths each (block 0's rate is 0)
    local seen = {}
    for _, s in ipairs(masks) do
      assert.is_nil(seen[s], "two drop paths drew the same mask " .. s)
      seen[s] = true
    end
    H.assert_error(function() facet.nn.DropPath(0 / 0) end, "nn.DropPath")
  end)

  it("takes arcface_torch's variant names and checks its options", function()
    local m = facet.models.vit { variant = "vit_b_dp005_mask_005", dim = 16, depth = 2, heads = 2, size = 18 }
    -- arcface_torch builds it with 0.05 but masks at random_masking's default 0.1: what it runs
    assert.are.equal(0.1, m.modules[3].ratio)
    local t = facet.models.vit { variant = "vit_t_dp005_mask0", dim = 16, depth = 3, heads = 2, emb = 4, size = 27 }
    assert.are.equal(9, t.modules[3].tokens)
    assert.are.equal(0, t.modules[3].ratio)
    -- drop path rises linearly to the given rate in the last block
    local blocks = t.modules[3].modules[1].modules[1]
    assert.are.equal(2, #blocks.modules[1].modules[1].modules[1].modules)   -- block 0: norm1, attn, no drop path
    assert.are.equal(0.05, blocks.modules[3].modules[1].modules[1].modules[3].p)
    assert.are.equal(0.025, blocks.modules[2].modules[1].modules[1].modules[3].p)
    assert.are.equal("vit", facet.models.build("vit", { dim = 8, depth = 1, heads = 2, size = 18 }).spec.name)
    H.assert_error(function() facet.models.vit { variant = "x" } end, "variant must be t, s, b, l")
    H.assert_error(function() facet.models.vit { dim = 10, heads = 4 } end, "multiple of heads 4")
    H.assert_error(function() facet.models.vit { mask_ratio = 1 } end, "mask_ratio")
    H.assert_error(function() facet.models.build("vit", { depthh = 2 }) end, "vit takes no option depthh")
  end)

  H.it("TokenMask keeps floor(N (1 - ratio)) tokens a sample; mask_token fills the rest; gradients by hand", function()
    local B, N, D = 5, 10, 3
    local m = H.module(nn.TokenMask(nn.Identity(), N, D, 0.35))
    assert.are.equal(6, m.keep)
    m.mask_token:copy(H.tensor({ { { 7, 8, 9 } } }))
    local x = H.on(facet.randn({ B, N, D }, { seed = 3 }))
    local y = m:forward(x)
    local xv, yv = H.values(x), H.values(y)
    local g = H.on(facet.randn({ B, N, D }, { seed = 4 }))
    local gv = H.values(g)
    m:zero_grad()
    local gi = H.values(m:backward(x, g))
    local want_mask, masks = { 0, 0, 0 }, {}
    for b = 0, B - 1 do
      local masked = 0
      for t = 0, N - 1 do
        local i = (b * N + t) * D
        local is_mask = yv[i + 1] == 7 and yv[i + 2] == 8 and yv[i + 3] == 9
        masks[#masks + 1] = is_mask and 1 or 0
        for d = 1, D do
          if is_mask then
            assert.are.equal(0, gi[i + d])
            want_mask[d] = want_mask[d] + gv[i + d]
          else
            assert.are.equal(xv[i + d], yv[i + d])
            assert.are.equal(gv[i + d], gi[i + d])
          end
        end
        if is_mask then masked = masked + 1 end
      end
      assert.are.equal(N - 6, masked, "sample " .. b)
    end
    H.assert_close(H.values(m.grad_mask_token), want_mask, 1e-5)
    -- another step draws other masks; evaluation masks nothing
    m:forward(x)
    local again = {}
    for i, v in ipairs(H.values(m.output)) do if (i - 1) % D == 0 then again[#again + 1] = v == 7 and 1 or 0 end end
    assert.are_not.same(masks, again)
    m:evaluate()
    H.assert_close(H.values(m:forward(x)), xv, 0)
  end)

  H.it("backward agrees with finite differences (BatchNorm's running statistics: nearly linear in each weight)", function()
    facet.manual_seed(2)
    local m = H.module(small { depth = 1, heads = 2, size = 18 })
    m:evaluate()
    local x = H.on(facet.randn({ 3, 3, 18, 18 }, { seed = 5 }))
    -- h small enough that no ReLU6 input crosses 0 or 6 (5e-3 crosses one in fc1), the tolerance wide
    -- enough for float32's rounding in differences of gradients near 1e-5
    J.check(m, x, { max = 6, h = 2e-3, tol = 5e-2 })
  end)

  H.it("bfloat16 and float16 runs follow float32; the final norm and feature head run in float32", function()
    local function run(dtype)
      facet.manual_seed(9)
      local m = H.module(small { mask_ratio = 0.25, drop_path = 0.1 })
      assert.is_true(m.modules[3].modules[1].modules[2].fp32)     -- norm
      assert.is_true(m.modules[5].fp32)                           -- feature
      local x = H.on(facet.randn({ 4, 3, 36, 36 }, { seed = 1 }))
      local y = m:forward(dtype == "float32" and x or x:to(dtype))
      assert.are.equal("float32", y:dtype())
      m:zero_grad()
      m:backward(dtype == "float32" and x or x:to(dtype), H.on(facet.randn({ 4, 8 }, { seed = 2 })))
      local gs = {}
      for _, p in ipairs(m:named_parameters()) do
        assert.are.equal("float32", p.grad:dtype(), p.name)
        gs[p.name] = p.grad:to("cpu"):clone()
      end
      return y:to("cpu"):clone(), gs
    end
    local y32, g32 = run("float32")
    for _, dtype in ipairs { "bfloat16", "float16" } do
      local y, g = run(dtype)
      local e = (y - y32):norm() / y32:norm()
      assert.is_true(e > 0 and e < (dtype == "float16" and 0.01 or 0.05), dtype .. " output off by " .. e)
      local num, den = 0, 0
      for k, a in pairs(g32) do
        local d = (g[k] - a):norm()
        num, den = num + d * d, den + a:norm() ^ 2
      end
      local total = math.sqrt(num / den)
      assert.is_true(total < (dtype == "float16" and 0.03 or 0.2), dtype .. " gradients off by " .. total)
    end
  end)

  it("trains under facet.train with precision = \"bf16\" and \"fp16\", following the fp32 losses", function()
    local function setup(precision)
      facet.manual_seed(11)
      local net = small { mask_ratio = 0.1, drop_path = 0.1 }
      local head = facet.heads.new("arcface", { classes = 6, dim = 8, seed = 3 })
      local labels = {}
      for i = 1, 24 do labels[i] = (i * 5) % 6 end
      local data = facet.data.tensors { x = facet.randn({ 24, 3, 36, 36 }, { seed = 4 }),
        y = facet.tensor(labels, { dtype = "int64" }), batch_size = 8, seed = 9 }
      local opt = facet.optim.sgd({ net, head }, { lr = 0.01, momentum = 0.9 })
      -- fp16: a loss scale that leaves this loss (about 28) and its gradients finite
      return { model = net, head = head, data = data, optimizer = opt, epochs = 1, quiet = true, precision = precision,
        loss_scale = precision == "fp16" and { init_scale = 2 ^ 8 } or nil }
    end
    local ref = facet.train(setup("fp32"))
    for _, p in ipairs { "bf16", "fp16" } do
      local r = facet.train(setup(p))
      assert.are.equal(3, #r.losses)
      for i = 1, 3 do
        assert.is_true(math.abs(r.losses[i] - ref.losses[i]) / ref.losses[i] < 0.05,
          ("%s loss %d: %g against %g"):format(p, i, r.losses[i], ref.losses[i]))
      end
    end
  end)
end)
