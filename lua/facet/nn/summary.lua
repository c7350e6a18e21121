--- facet.nn.summary(model, input_shape [, opts]): one forward in evaluation
-- mode on zeros of input_shape (batch included), printing each layer of the
-- Sequential tree (other containers as one row) with its output shape,
-- parameters and multiply-add FLOPs (2 per MAC, convolutions and linear
-- layers), then the totals. Returns { params =, flops =, rows = {...} }.
-- opts.print = false returns the table without printing.
local tensor = require "facet.tensor"
local Conv2d = require "facet.nn.Conv2d"
local Linear = require "facet.nn.Linear"
local core = require "facet.core"
local valid = require "facet.check"

local function run(model, input_shape, opts)
  valid.module("nn.summary", "model", model)
  valid.list("nn.summary", "input_shape", input_shape, { integer = true, min = 1, min_len = 1 })
  opts = valid.options("nn.summary", opts, { "print" })
  local flops = 0
  local conv_fwd, lin_fwd = Conv2d.update_output, Linear.update_output
  Conv2d.update_output = function(self, x) flops = flops + self:flops(x:shape()); return conv_fwd(self, x) end
  Linear.update_output = function(self, x) flops = flops + 2 * x:size(1) * self.n_in * self.n_out; return lin_fwd(self, x) end
  local rows = {}
  local function visit(m, path, x)
    if m.__name == "Sequential" then
      for i, c in ipairs(m.modules) do x = visit(c, path == "" and tostring(i) or (path .. "." .. i), x) end
      return x
    end
    local before = flops
    local y = m:forward(x)
    rows[#rows + 1] = { path = path, layer = m:describe(), shape = y:shape(), params = m:count_parameters(),
      flops = flops - before }
    return y
  end
  local was_training = model.training
  model:evaluate()
  local ok, err = pcall(visit, model, "", tensor.zeros(input_shape, { device = model.device }))
  Conv2d.update_output, Linear.update_output = conv_fwd, lin_fwd
  model:train(was_training)
  if not ok then core.raise(err, 2) end
  local total_p, total_f = model:count_parameters(), flops
  if opts.print ~= false then
    local w = 10
    for _, r in ipairs(rows) do w = math.max(w, #r.layer + #r.path + 1) end
    print(("%-" .. w .. "s %-18s %12s %12s"):format("layer", "output", "params", "MFLOPs"))
    for _, r in ipairs(rows) do
      print(("%-" .. w .. "s %-18s %12d %12.1f"):format(r.path .. " " .. r.layer, table.concat(r.shape, "x"), r.params,
        r.flops / 1e6))
    end
    print(("total: %d parameters, %.3f GFLOPs per forward of %s"):format(total_p, total_f / 1e9,
      table.concat(input_shape, "x")))
  end
  return { params = total_p, flops = total_f, rows = rows }
end

return run
