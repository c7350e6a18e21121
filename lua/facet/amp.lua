--- facet.amp: dynamic loss scaling for float16 training (docs/mixed-precision.md).
-- float16 gradients underflow to zero below 2^-24; scaling the loss (in
-- practice the gradient that enters the backward pass) by a large factor keeps
-- them representable, and the gradients are divided by it again before
-- clipping and the optimizer step. The factor adapts:
--   * it starts at init_scale (2^16);
--   * a step whose gradients hold NaN or +-inf (an overflow) is skipped and
--     the scale multiplied by backoff_factor (0.5);
--   * after growth_interval (100, as arcface_torch) finite steps in a row it
--     is multiplied by growth_factor (2), up to max_scale.
-- One training step:
--   local scaler = facet.amp.scaler()
--   local grad = head:backward()                 -- d loss / d embedding
--   model:backward(x, scaler:scale_grad(grad))   -- times the scale, in place
--   if scaler:unscale(grads) then                -- divides back; false: overflow
--     (clip, then) optimizer:step()
--   end
--   scaler:update()                              -- skip or count, adapt the scale
-- unscale() takes every gradient tensor at once and finds non-finite values
-- in one fused pass (facet_amp_unscale: on CUDA one flag read back for the
-- whole list, not one synchronisation per tensor; one launch per 48
-- tensors; nothing allocated per call). A scaler made with
-- enabled = false (bfloat16 or float32 training) keeps the scale at 1 and
-- still reports non-finite gradients, which are then a real divergence.
-- state_dict() / load_state() carry the scale and the counters through
-- checkpoints.
local ffi = require "ffi"
local core = require "facet.core"
local valid = require "facet.check"
local tensor = require "facet.tensor"

local C = core.C
local M = {}

local Scaler = {}
Scaler.__index = Scaler

local OPTIONS = { "init_scale", "growth_factor", "backoff_factor", "growth_interval", "max_scale", "min_scale",
  "enabled" }

local found_1 = ffi.new("int[1]")

-- whether grads holds the tensors of last (the list unscale() filled its
-- handle array from), all still alive: compares and numbers, nothing allocated
local function same_tensors(last, grads)
  local words = last.words
  for i = 1, last.n do
    if not rawequal(grads[i], last[i]) or tensor.freed_words(words[i]) then return false end
  end
  return true
end

--- facet.amp.scaler{ init_scale = 2^16, growth_factor = 2, backoff_factor = 0.5,
-- growth_interval = 100, max_scale = 2^24, min_scale = 2^-14, enabled = true }.
-- min_scale: an overflow at this scale is not an fp16 overflow any more but a
-- divergence; update() then reports "diverged" and leaves the scale there.
function M.scaler(opts)
  local fn = "facet.amp.scaler"
  opts = valid.options(fn, opts, OPTIONS)
  local s = setmetatable({}, Scaler)
  s.enabled = opts.enabled == nil and true or valid.boolean(fn, "enabled", opts.enabled)
  s.growth_factor = valid.number(fn, "growth_factor", opts.growth_factor, { gt = 1, default = 2 })
  s.backoff_factor = valid.number(fn, "backoff_factor", opts.backoff_factor, { gt = 0, lt = 1, default = 0.5 })
  s.growth_interval = valid.integer(fn, "growth_interval", opts.growth_interval, { min = 1, default = 100 })
  s.max_scale = valid.number(fn, "max_scale", opts.max_scale, { gt = 0, default = 2 ^ 24 })
  s.min_scale = valid.number(fn, "min_scale", opts.min_scale, { gt = 0, default = 2 ^ -14 })
  if s.min_scale > s.max_scale then
    valid.fail(fn, ("min_scale (%g) must not exceed max_scale (%g)"):format(s.min_scale, s.max_scale))
  end
  local init = valid.number(fn, "init_scale", opts.init_scale, { gt = 0, default = 2 ^ 16 })
  if init < s.min_scale or init > s.max_scale then
    valid.fail(fn, ("init_scale must lie in [min_scale, max_scale] = [%g, %g], got %g"):format(s.min_scale,
      s.max_scale, init))
  end
  s.scale = s.enabled and init or 1
  s.growth_tracker = 0     -- finite steps since the scale last changed
  s.steps = 0              -- update() calls
  s.skipped = 0            -- steps skipped for non-finite gradients
  s.found = nil            -- the verdict of this step's unscale(), until update()
  return s
end

--- The gradient entering the backward pass, multiplied by the scale in place
-- (returns it). With enabled = false it is left alone.
function Scaler:scale_grad(t)
  valid.tensor("scaler:scale_grad", "t", t)
  if self.enabled and self.scale ~= 1 then t:mul_(self.scale) end
  return t
end

--- The loss value multiplied by the scale (for code that scales a number).
function Scaler:scale_loss(loss)
  valid.number("scaler:scale_loss", "loss", loss, { finite = false })
  return loss * self.scale
end

--- Divides every gradient of the list (float32, float16 or bfloat16,
-- contiguous, one device) by the scale in place and checks all of them for
-- NaN and +-inf in one fused pass. Returns true when all were finite (take
-- the optimizer step), false on overflow (skip it). Once per step: call
-- update() before the next one.
function Scaler:unscale(grads)
  local fn = "scaler:unscale"
  if self.found ~= nil then valid.fail(fn, "called twice in one step; call scaler:update() after each step") end
  if type(grads) ~= "table" or tensor.is_tensor(grads) then
    valid.fail(fn, "grads must be a list of tensors, got " .. (tensor.is_tensor(grads) and "a tensor"
      or valid.describe(grads)))
  end
  local n = #grads
  -- the handle array is kept and grown, never made per step, and filled only
  -- when the list differs from the last one (another table, length or
  -- tensor, or a tensor freed since): reading a handle boxes it in the
  -- interpreter. A name is only formatted for a message.
  local list, last = self.handles, self.last
  if not (last and rawequal(last.grads, grads) and last.n == n and same_tensors(last, grads)) then
    if not list or self.capacity < n then
      self.capacity = math.max(n, 1)
      list = ffi.new("facet_tensor *[?]", self.capacity)
      self.handles = list
    end
    self.last = nil
    last = { grads = grads, n = n, words = {} }
    for i = 1, n do
      local g = grads[i]
      if not tensor.is_tensor(g) or g:is_freed() then valid.tensor(fn, ("grads[%d]"):format(i), g) end
      list[i - 1] = g.h
      last[i], last.words[i] = g, tensor.handle_words(g)
    end
    self.last = last
  end
  core.check(C.facet_amp_unscale(list, n, 1 / self.scale, found_1))
  self.found = found_1[0] ~= 0
  return not self.found
end

--- Ends the step: after an overflow the step counts as skipped and the scale
-- backs off, else the run of finite steps grows and may double the scale.
-- Returns "skipped", "grew", "kept" or "diverged" (an overflow at min_scale,
-- or any non-finite gradient when scaling is disabled).
function Scaler:update()
  if self.found == nil then valid.fail("scaler:update", "no unscale() in this step; call scaler:unscale(grads) first") end
  local found = self.found
  self.found = nil
  self.steps = self.steps + 1
  if found then
    self.skipped = self.skipped + 1
    self.growth_tracker = 0
    if not self.enabled or self.scale <= self.min_scale then return "diverged" end
    self.scale = math.max(self.scale * self.backoff_factor, self.min_scale)
    return "skipped"
  end
  self.growth_tracker = self.growth_tracker + 1
  if self.enabled and self.growth_tracker >= self.growth_interval then
    self.growth_tracker = 0
    local grown = math.min(self.scale * self.growth_factor, self.max_scale)
    if grown ~= self.scale then
      self.scale = grown
      return "grew"
    end
  end
  return "kept"
end

local STATE_KEYS = { "scale", "growth_tracker", "steps", "skipped", "growth_factor", "backoff_factor",
  "growth_interval", "max_scale", "min_scale", "enabled" }

--- The scaler's state, a plain table of numbers and a boolean (for checkpoints).
function Scaler:state_dict()
  local st = {}
  for _, k in ipairs(STATE_KEYS) do st[k] = self[k] end
  return st
end

--- Restores a state_dict(); checks it whole first, so a refused state leaves
-- the scaler as it was.
function Scaler:load_state(st)
  local fn = "scaler:load_state"
  if type(st) ~= "table" then valid.fail(fn, "state must be a table, got " .. valid.describe(st)) end
  valid.options(fn, st, STATE_KEYS)
  if self.found ~= nil then valid.fail(fn, "called between unscale() and update()") end
  local enabled = valid.boolean(fn, "enabled", st.enabled)
  local t = {
    growth_factor = valid.number(fn, "growth_factor", st.growth_factor, { gt = 1 }),
    backoff_factor = valid.number(fn, "backoff_factor", st.backoff_factor, { gt = 0, lt = 1 }),
    growth_interval = valid.integer(fn, "growth_interval", st.growth_interval, { min = 1 }),
    max_scale = valid.number(fn, "max_scale", st.max_scale, { gt = 0 }),
    min_scale = valid.number(fn, "min_scale", st.min_scale, { gt = 0 }),
    growth_tracker = valid.integer(fn, "growth_tracker", st.growth_tracker, { min = 0 }),
    steps = valid.integer(fn, "steps", st.steps, { min = 0 }),
    skipped = valid.integer(fn, "skipped", st.skipped, { min = 0 }),
  }
  local scale = valid.number(fn, "scale", st.scale, { gt = 0 })
  if enabled ~= self.enabled then
    valid.fail(fn, ("the state has enabled = %s, this scaler %s"):format(tostring(enabled), tostring(self.enabled)))
  end
  if t.skipped > t.steps then valid.fail(fn, ("skipped (%d) exceeds steps (%d)"):format(t.skipped, t.steps)) end
  for k, v in pairs(t) do self[k] = v end
  self.scale = scale
  return self
end

valid.methods(Scaler, "scaler", "a facet.amp scaler")
M.Scaler = Scaler
return M
