--- The Vision Transformer's layers (facet.nn.LayerNorm, Softmax, ReLU6,
-- MultiheadAttention, DropPath, PosEmbed, Tokens, Rows) against PyTorch
-- (spec/support/vit_torch.py, float64 autograd) and against values worked
-- out by hand; forward and backward, on the device under test.
local H = require "support.device"
local F = require "support.files"
local facet = H.facet
local nn = facet.nn

local HAVE_TORCH = select(2, F.sh(F.PY .. " -c 'import torch'")) == 0

-- max |a - b| / max |b|
local function rel(a, b) return (a:to("cpu") - b):abs():max() / b:abs():max() end

local function close(name, a, b, tol)
  local r = rel(a, b)
  assert.is_true(r < (tol or 1e-5), ("%s: relative difference %g"):format(name, r))
end

describe("ViT layers", function()
  -- every PyTorch reference from one run of the script
  local dir, ref
  local inputs = {}
  local function reference()
    if ref then return ref end
    dir = H.temp_dir()
    local function put(name, t) inputs[name] = t; facet.save_npy(t, ("%s/%s.npy"):format(dir, name)) end
    put("ln_x", facet.randn({ 3, 7, 40 }, { seed = 1 }):mul(2):add(0.5))
    put("ln_w", facet.randn({ 40 }, { seed = 2 }):mul(0.3):add(1))
    put("ln_b", facet.randn({ 40 }, { seed = 3 }):mul(0.3))
    put("ln_g", facet.randn({ 3, 7, 40 }, { seed = 4 }))
    put("ln_eps", facet.tensor({ 1e-6 }))
    put("sm_x", facet.randn({ 6, 5, 37 }, { seed = 5 }):mul(3))
    put("sm_g", facet.randn({ 6, 5, 37 }, { seed = 6 }))
    put("r6_x", facet.randn({ 50, 9 }, { seed = 7 }):mul(5))
    put("r6_g", facet.randn({ 50, 9 }, { seed = 8 }))
    put("at_x", facet.randn({ 3, 10, 16 }, { seed = 9 }))
    put("at_wqkv", facet.randn({ 48, 16 }, { seed = 10 }):mul(0.4))
    put("at_wproj", facet.randn({ 16, 16 }, { seed = 11 }):mul(0.3))
    put("at_bproj", facet.randn({ 16 }, { seed = 12 }):mul(0.1))
    put("at_g", facet.randn({ 3, 10, 16 }, { seed = 13 }))
    put("at_heads", facet.tensor({ 4 }))
    local out, rc = F.sh(("%s spec/support/vit_torch.py %s"):format(F.PY, dir))
    assert.are.equal(0, rc, out)
    ref = setmetatable({}, { __index = function(t, k)
      local v = facet.load_npy(("%s/%s.npy"):format(dir, k))
      rawset(t, k, v)
      return v
    end })
    return ref
  end
  teardown(function() if dir then H.remove_dir(dir) end end)

  H.it("LayerNorm: output, input and parameter gradients as PyTorch's; parameter gradients accumulate", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local r = reference()
    local m = H.module(nn.LayerNorm(40, { eps = 1e-6 }))
    m.weight:copy(H.on(inputs.ln_w))
    m.bias:copy(H.on(inputs.ln_b))
    local x, g = H.on(inputs.ln_x), H.on(inputs.ln_g)
    close("y", m:forward(x), r.ln_y)
    close("dx", m:backward(x, g), r.ln_dx, 1e-4)
    close("dw", m.grad_weight, r.ln_dw, 1e-5)
    close("db", m.grad_bias, r.ln_db, 1e-5)
    m:backward(x, g)
    close("dw twice", m.grad_weight, r.ln_dw:mul(2), 1e-5)
  end)

  H.it("LayerNorm by hand: a row 1, 2, 3, 4 without affine", function()
    local m = H.module(nn.LayerNorm(4, { affine = false, eps = 0 }))
    local y = H.values(m:forward(H.tensor({ { 1, 2, 3, 4 } })))
    local s = math.sqrt(1.25)
    H.assert_close(y, { -1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s }, 1e-6)
    -- a constant gradient has no effect through the normalisation
    H.assert_close(H.values(m:backward(H.tensor({ { 1, 2, 3, 4 } }), H.tensor({ { 1, 1, 1, 1 } }))), { 0, 0, 0, 0 },
      1e-6)
    H.assert_error(function() m:forward(H.tensor({ { 1, 2, 3 } })) end, "LayerNorm(4, no affine)", "want ... x 4 input")
  end)

  -- an elementwise or row layer m against the reference `prefix`_y and _dx of input prefix_x and gradient prefix_g
  local function against_torch(m, prefix, tol)
    local r = reference()
    local x = H.on(inputs[prefix .. "_x"])
    close(prefix .. " y", m:forward(x), r[prefix .. "_y"], tol)
    close(prefix .. " dx", m:backward(x, H.on(inputs[prefix .. "_g"])), r[prefix .. "_dx"], tol)
  end

  H.it("Softmax: output and input gradient as PyTorch's", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local m = H.module(nn.Softmax())
    against_torch(m, "sm", 1e-5)
    -- huge inputs stay finite: the row's maximum is taken out first
    H.assert_close(H.values(m:forward(H.tensor({ { 1000, 1000 } }))), { 0.5, 0.5 }, 1e-7)
  end)

  H.it("ReLU6: output and input gradient as PyTorch's; 16-bit inputs natively", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local m = H.module(nn.ReLU6())
    against_torch(m, "r6", 1e-7)
    H.assert_close(H.values(m:forward(H.tensor({ -2, 0, 3.5, 6, 9 }))), { 0, 0, 3.5, 6, 6 }, 0)
    local xb = H.tensor({ -2, 0.5, 3.5, 7 }):to("bfloat16")
    local yb = m:forward(xb)
    assert.are.equal("bfloat16", yb:dtype())
    H.assert_close(H.values(yb:float()), { 0, 0.5, 3.5, 6 }, 0)
    H.assert_close(H.values(m:backward(xb, H.tensor({ 1, 1, 1, 1 }):to("bfloat16")):float()), { 0, 1, 1, 0 }, 0)
    -- a NaN input passes its gradient on, as PyTorch's hardtanh_backward
    local xn = H.tensor({ 0 / 0, 3 })
    m:forward(xn)
    assert.are.same({ 2, 2 }, H.values(m:backward(xn, H.tensor({ 2, 2 }))))
  end)

  H.it("MultiheadAttention: output, input and parameter gradients as arcface_torch's Attention", function()
    if not HAVE_TORCH then return pending("needs torch in " .. F.PYTHON) end
    local r = reference()
    local m = H.module(nn.MultiheadAttention(16, 4))
    local sd = m:state_dict()
    local names = {}
    for k in pairs(sd) do names[#names + 1] = k end
    table.sort(names)
    assert.are.same({ "proj.bias", "proj.weight", "qkv.weight" }, names)
    sd["qkv.weight"]:copy(H.on(inputs.at_wqkv))
    sd["proj.weight"]:copy(H.on(inputs.at_wproj))
    sd["proj.bias"]:copy(H.on(inputs.at_bproj))
    local x, g = H.on(inputs.at_x), H.on(inputs.at_g)
    close("y", m:forward(x), r.at_y, 1e-5)
    close("dx", m:backward(x, g), r.at_dx, 1e-4)
    local qkv, proj = m.modules[1], m.modules[2]
    close("dWqkv", qkv.grad_weight, r.at_dwqkv, 1e-4)
    close("dWproj", proj.grad_weight, r.at_dwproj, 1e-4)
    close("dbproj", proj.grad_bias, r.at_dbproj, 1e-5)
    -- a second step with the same shapes reuses the buffers and gives the same values
    m:zero_grad()
    close("y again", m:forward(x), r.at_y, 1e-5)
    close("dx again", m:backward(x, g), r.at_dx, 1e-4)
    -- bfloat16 tokens: widened, the output rounded once
    local yb = m:forward(x:to("bfloat16"))
    assert.are.equal("bfloat16", yb:dtype())
    close("y bf16", yb:float(), r.at_y, 2e-2)
    H.assert_error(function() m:forward(H.on(facet.randn({ 3, 10, 8 }))) end, "want B x N x 16 input")
    H.assert_error(function() nn.MultiheadAttention(10, 4) end, "multiple of heads")
  end)

  H.it("DropPath: zeroes whole samples with probability p, scales the rest by 1/(1-p); identity in evaluation", function()
    local p, B = 0.25, 400
    local m = H.module(nn.DropPath(p))
    local x = H.on(facet.randn({ B, 3, 4 }, { seed = 21 }))
    local y = m:forward(x)
    local xv, yv = H.values(x), H.values(y)
    local kept = 0
    for b = 0, B - 1 do
      local ratio = yv[b * 12 + 1] / xv[b * 12 + 1]
      local keep = math.abs(ratio - 1 / (1 - p)) < 1e-6
      assert.is_true(keep or ratio == 0, "sample " .. b .. " scaled by " .. ratio)
      for j = 2, 12 do
        H.assert_close(yv[b * 12 + j], keep and xv[b * 12 + j] / (1 - p) or 0, 1e-6)
      end
      if keep then kept = kept + 1 end
    end
    -- 400 draws with keep probability 0.75: 300 +- 4.3 sigma
    assert.is_true(math.abs(kept - 300) < 38, "kept " .. kept)
    local gv = H.values(m:backward(x, H.on(facet.ones({ B, 3, 4 }))))
    for b = 0, B - 1 do H.assert_close(gv[b * 12 + 5], yv[b * 12 + 5] / xv[b * 12 + 5], 1e-5) end
    m:evaluate()
    assert.are.equal(x, m:forward(x))
  end)

  H.it("PosEmbed: adds the parameter to every sample; its gradient is the batch's sum and accumulates", function()
    local m = H.module(nn.PosEmbed(2, 3))
    assert.are.same({ 1, 2, 3 }, m.pos_embed:shape())
    m.pos_embed:copy(H.tensor({ { { 1, 2, 3 }, { 4, 5, 6 } } }))
    local x = H.tensor({ { { 0, 0, 0 }, { 1, 1, 1 } }, { { 2, 2, 2 }, { 3, 3, 3 } } })
    H.assert_close(H.values(m:forward(x)), { 1, 2, 3, 5, 6, 7, 3, 4, 5, 7, 8, 9 }, 0)
    local g = H.tensor({ { { 1, 2, 3 }, { 4, 5, 6 } }, { { 10, 20, 30 }, { 40, 50, 60 } } })
    H.assert_close(H.values(m:backward(x, g)), H.values(g), 0)
    m:backward(x, g)
    H.assert_close(H.values(m.grad_pos_embed), { 22, 44, 66, 88, 110, 132 }, 0)
  end)

  H.it("Tokens: N x C x H x W to N x HW x C (token h W + w) and back; Rows runs a Linear on every token", function()
    local t = H.module(nn.Tokens())
    local x = H.on(facet.arange(0, 24):reshape({ 2, 3, 2, 2 }))
    local y = t:forward(x)
    assert.are.same({ 2, 4, 3 }, y:shape())
    -- sample 1, token (h 2, w 1) = index 3: channels c * 4 + 2
    H.assert_close(H.values(y:select(1, 1):select(1, 3)), { 2, 6, 10 }, 0)
    H.assert_close(H.values(t:backward(x, y)), H.values(x), 0)
    local lin = nn.Linear(3, 2)
    local rows = H.module(nn.Rows(lin))
    local z = rows:forward(y)
    assert.are.same({ 2, 4, 2 }, z:shape())
    local want = lin:forward(y:reshape({ 8, 3 }))
    H.assert_close(H.values(z), H.values(want), 1e-6)
    assert.are.same({ 2, 4, 3 }, rows:backward(y, z):shape())
    local keys = {}
    for k in pairs(rows:state_dict()) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ "bias", "weight" }, keys)
  end)

  H.it("the C functions check their arguments", function()
    local C, ffi = require("facet.core").C, require "ffi"
    local x = H.on(facet.randn({ 4, 5 }))
    local out = H.on(facet.empty({ 4, 5 }))
    local w = H.on(facet.ones({ 5 }))
    assert.are_not.equal(0, C.facet_layernorm_forward(out.h, nil, nil, x.h, w.h, nil, 1e-5))
    assert.truthy(ffi.string(C.facet_last_error()):find("weight and bias", 1, true))
    assert.are_not.equal(0, C.facet_layernorm_forward(out.h, nil, nil, x.h, nil, nil, -1))
    assert.are_not.equal(0, C.facet_layernorm_forward(out.h, nil, nil, x.h, H.on(facet.ones({ 4 })).h,
      H.on(facet.ones({ 4 })).h, 1e-5))
    assert.are_not.equal(0, C.facet_softmax_forward(H.on(facet.empty({ 5, 4 })).h, x.h))
    assert.are_not.equal(0, C.facet_softmax_forward(out.h, nil))
    assert.are_not.equal(0, C.facet_layernorm_backward(nil, nil, nil, x.h, x.h, nil, nil, nil))
  end)
end)
