--- facet.data.synthetic{ ... }: seeded synthetic identities, written in the
-- formats real face data comes in (no face dataset can be downloaded here).
--   facet.data.synthetic{ out = "data/syn", identities = 1000, images = 10,
--     size = 112, seed = 1, hard = 0.1, verify_identities = 100, pairs = 1000 }
-- writes out.rec/.idx (InsightFace layout, PNG images) for training and
-- out_verify.bin (a pickle of (images, issame), like lfw.bin) whose
-- identities are disjoint from the training ones.
-- An identity is a face-like prototype drawn from (seed, identity): face
-- ellipse and skin tone with a smooth texture, hair line, eyes, brows, nose
-- and mouth at random landmarks. An image is that prototype under a random
-- pose (rotation, scale, shift), illumination (brightness and a gradient),
-- blur, noise and, sometimes, an occluding block; a fraction `hard` of the
-- images gets strong blur, noise and occlusion: the rare low-quality samples
-- L2-softmax and MV-Softmax claim to help with. Everything is a pure function
-- of the seed.
local ffi = require "ffi"
local tensor = require "facet.tensor"
local image = require "facet.data.image"
local valid = require "facet.check"

local M = {}

-- a small deterministic generator (splitmix64 on doubles' exact integer range)
local function rng(a, b, c)
  local state = ((a * 1000003 + b) * 1000003 + c) % 2147483647
  if state == 0 then state = 1 end
  return function()
    state = (state * 48271) % 2147483647       -- Park-Miller
    return state / 2147483647
  end
end

local function lerp(r, a, b) return a + (b - a) * r() end

local function prototype(seed, id)
  local r = rng(seed, id, 7)
  local p = {
    bg = { lerp(r, 40, 200), lerp(r, 40, 200), lerp(r, 40, 200) },
    cx = lerp(r, -0.05, 0.05), cy = lerp(r, 0.0, 0.1), ax = lerp(r, 0.45, 0.62), ay = lerp(r, 0.62, 0.8),
    skin = { lerp(r, 120, 240), 0, 0 }, hair = { lerp(r, 10, 120), 0, 0 },
    hairline = lerp(r, -0.6, -0.3), ex = lerp(r, 0.18, 0.3), ey = lerp(r, -0.25, -0.05), er = lerp(r, 0.05, 0.09),
    iris = { lerp(r, 20, 140), lerp(r, 20, 120), lerp(r, 20, 120) }, brow = lerp(r, 0.06, 0.14),
    ny = lerp(r, 0.05, 0.2), nw = lerp(r, 0.05, 0.1), my = lerp(r, 0.32, 0.48), mw = lerp(r, 0.15, 0.28),
    mh = lerp(r, 0.03, 0.07), lip = { lerp(r, 120, 220), lerp(r, 40, 100), lerp(r, 50, 110) }, tex = {},
  }
  p.skin[2], p.skin[3] = p.skin[1] * lerp(r, 0.7, 0.85), p.skin[1] * lerp(r, 0.55, 0.75)
  p.hair[2], p.hair[3] = p.hair[1] * lerp(r, 0.6, 1.0), p.hair[1] * lerp(r, 0.4, 0.9)
  for k = 1, 3 do p.tex[k] = { lerp(r, -1, 1), lerp(r, 2, 9), lerp(r, 2, 9), lerp(r, 0, 6.283) } end
  return p
end

local function inside(u, v, cx, cy, ax, ay) local a, b = (u - cx) / ax, (v - cy) / ay; return a * a + b * b <= 1 end

-- the prototype's colour at (u, v) in [-1, 1]^2
local function colour(p, u, v)
  local c = p.bg
  if inside(u, v, p.cx, p.cy - 0.05, p.ax * 1.08, p.ay * 1.05) and v < p.cy + p.hairline then c = p.hair end
  if inside(u, v, p.cx, p.cy, p.ax, p.ay) then
    if v < p.cy + p.hairline then return p.hair[1], p.hair[2], p.hair[3] end
    local t = 1
    for k = 1, 3 do local w = p.tex[k]; t = t + 0.05 * w[1] * math.cos(w[2] * u + w[3] * v + w[4]) end
    local r, g, b = p.skin[1] * t, p.skin[2] * t, p.skin[3] * t
    local du = math.abs(u - p.cx)
    if inside(du, v, p.ex, p.cy + p.ey, p.er * 1.6, p.er) then
      if inside(du, v, p.ex, p.cy + p.ey, p.er * 0.7, p.er * 0.7) then return p.iris[1], p.iris[2], p.iris[3] end
      return 235, 235, 230
    end
    if du > p.ex - p.er * 1.8 and du < p.ex + p.er * 1.8 and math.abs(v - (p.cy + p.ey - p.er - p.brow)) < 0.025 then
      return p.hair[1], p.hair[2], p.hair[3]
    end
    if inside(u, v, p.cx, p.cy + p.ny, p.nw, p.nw * 1.6) then return r * 0.82, g * 0.78, b * 0.78 end
    if inside(u, v, p.cx, p.cy + p.my, p.mw, p.mh) then return p.lip[1], p.lip[2], p.lip[3] end
    return r, g, b
  end
  return c[1], c[2], c[3]
end

--- One rendered image (H x W x 3 uint8) of identity `id`, sample `k`.
function M.render(seed, id, k, size, hard_fraction)
  local FN = "facet.data.render_synthetic"
  valid.integer(FN, "seed", seed, { min = 0, max = 2 ^ 31 - 1 })
  valid.integer(FN, "identity", id, { min = 0, max = 2 ^ 31 - 1 })
  valid.integer(FN, "sample", k, { min = 0, max = 2 ^ 31 - 1 })
  valid.integer(FN, "size", size, { min = 8, max = 4096 })
  valid.number(FN, "hard", hard_fraction, { min = 0, max = 1, optional = true })
  local p = prototype(seed, id)
  local r = rng(seed, id, 1000 + k)
  local hard = r() < (hard_fraction or 0.1)
  local angle, scale = lerp(r, -0.2, 0.2), lerp(r, 0.9, 1.1)
  local sx, sy = lerp(r, -0.08, 0.08), lerp(r, -0.08, 0.08)
  local bright, gx, gy = lerp(r, 0.75, 1.2), lerp(r, -0.2, 0.2), lerp(r, -0.2, 0.2)
  local blur = hard and math.floor(lerp(r, 2, 4)) or (r() < 0.3 and 1 or 0)
  local sigma = hard and lerp(r, 15, 35) or lerp(r, 2, 8)
  local occ = r() < (hard and 0.7 or 0.05)
  local ox, oy, ow, oh = lerp(r, -0.8, 0.4), lerp(r, -0.8, 0.4), lerp(r, 0.3, 0.7), lerp(r, 0.3, 0.7)
  local occ_c = lerp(r, 0, 255)
  local ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
  local n = size
  local buf = ffi.new("float[?]", n * n * 3)
  for y = 0, n - 1 do
    for x = 0, n - 1 do
      local X, Y = (x + 0.5) / n * 2 - 1 - sx, (y + 0.5) / n * 2 - 1 - sy
      local u, v = ca * X + sa * Y, -sa * X + ca * Y          -- the inverse pose
      local cr, cg, cb = colour(p, u, v)
      local light = bright * (1 + gx * X + gy * Y)
      if occ and X > ox and X < ox + ow and Y > oy and Y < oy + oh then cr, cg, cb, light = occ_c, occ_c * 0.9, occ_c * 0.8, 1 end
      local o = (y * n + x) * 3
      buf[o], buf[o + 1], buf[o + 2] = cr * light, cg * light, cb * light
    end
  end
  -- box blur (separable), then noise
  for _ = 1, blur do
    local tmp = ffi.new("float[?]", n * n * 3)
    for pass = 1, 2 do
      local src, dst = pass == 1 and buf or tmp, pass == 1 and tmp or buf
      for y = 0, n - 1 do
        for x = 0, n - 1 do
          for c = 0, 2 do
            local s, cnt = 0, 0
            for d = -1, 1 do
              local xx, yy = pass == 1 and x + d or x, pass == 2 and y + d or y
              if xx >= 0 and xx < n and yy >= 0 and yy < n then s = s + src[(yy * n + xx) * 3 + c]; cnt = cnt + 1 end
            end
            dst[(y * n + x) * 3 + c] = s / cnt
          end
        end
      end
    end
  end
  local img = tensor.empty({ n, n, 3 }, { dtype = "uint8" })
  local d = img:data_ptr()
  for i = 0, n * n * 3 - 1 do
    -- Box-Muller from two draws
    local z = math.sqrt(-2 * math.log(math.max(r(), 1e-12))) * math.cos(6.283185307 * r())
    local v = buf[i] + sigma * z
    d[i] = v < 0 and 0 or (v > 255 and 255 or math.floor(v + 0.5))
  end
  return img, hard
end

-- a pickle (protocol 3) of (list of bytes, list of booleans), as lfw.bin is
local function pickle_bin(images, issame)
  local parts = { "\128\3", "]", "(" }
  local function u32(n) return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256) end
  for _, b in ipairs(images) do parts[#parts + 1] = "B" .. u32(#b) .. b end
  parts[#parts + 1] = "e]("
  for _, s in ipairs(issame) do parts[#parts + 1] = s and "\136" or "\137" end
  parts[#parts + 1] = "e\134."
  return table.concat(parts)
end

function M.generate(o)
  if type(o) ~= "table" or type(o.out) ~= "string" then error("facet.data.synthetic{ out = prefix, ... }", 2) end
  local FN = "facet.data.synthetic"
  valid.options(FN, o, { "out", "identities", "images", "size", "seed", "verify_identities", "pairs", "hard" })
  local N = valid.integer(FN, "identities", o.identities, { min = 1, max = 2 ^ 31 - 1, default = 1000 })
  local K = valid.integer(FN, "images", o.images, { min = 1, max = 2 ^ 31 - 1, default = 10 })
  local size = valid.integer(FN, "size", o.size, { min = 8, max = 4096, default = 112 })
  local seed = valid.integer(FN, "seed", o.seed, { min = 0, max = 2 ^ 31 - 1, default = 1 })
  local V = valid.integer(FN, "verify_identities", o.verify_identities, { min = 2, max = 2 ^ 31 - 1,
    default = math.max(2, math.floor(N / 10)) })
  local P = valid.integer(FN, "pairs", o.pairs, { min = 2, max = 2 ^ 31 - 1, default = 1000 })
  local hard = valid.number(FN, "hard", o.hard, { min = 0, max = 1, default = 0.1 })
  if N < 1 or K < 1 or V < 2 or P < 2 then error("synthetic: identities, images >= 1; verify_identities, pairs >= 2", 2) end
  -- out's directory is made when missing, as pack makes its prefix's
  local dir = o.out:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    local sys = require "facet.sys"
    local made, why = sys.mkdir_p(dir)
    if not made then error(("synthetic: cannot make the directory %s: %s"):format(dir, tostring(why)), 2) end
  end
  local w = require("facet.data.recordio").writer(o.out)
  local total = N * K
  w:write(0, { total + 1, total + 1 + N }, "")
  local hard_count = 0
  for id = 0, N - 1 do
    for k = 1, K do
      local img, h = M.render(seed, id, k, size, hard)
      if h then hard_count = hard_count + 1 end
      w:write(id * K + k, id, image.encode_png(img))
    end
  end
  for id = 0, N - 1 do w:write(total + 1 + id, { id * K + 1, id * K + K + 1 }, "") end
  w:close()
  -- verification pairs over identities N .. N + V - 1 (never trained on)
  local r = rng(seed, 999983, P)
  local images, issame = {}, {}
  for p = 1, P do
    local same = p % 2 == 1
    local a = N + math.floor(r() * V)
    local b = a
    if not same then repeat b = N + math.floor(r() * V) until b ~= a end
    local ka, kb = 1000 + 2 * p, 1001 + 2 * p      -- sample numbers apart from the training ones
    images[2 * p - 1] = image.encode_png((M.render(seed, a, ka, size, hard)))
    images[2 * p] = image.encode_png((M.render(seed, b, kb, size, hard)))
    issame[p] = same
  end
  local f = assert(io.open(o.out .. "_verify.bin", "wb"))
  f:write(pickle_bin(images, issame))
  f:close()
  return { images = total, identities = N, hard = hard_count, pairs = P, verify_identities = V,
    train = o.out .. ".rec", verify = o.out .. "_verify.bin" }
end

return M
