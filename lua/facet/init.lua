--- facet: face-recognition training from LuaJIT.
-- `local facet = require "facet"` gives the tensor constructors, the runtime
-- settings and the sub-modules (facet.cuda, facet.load_npy / save_npy ...).
local ffi = require "ffi"
local core = require "facet.core"
local tensor = require "facet.tensor"

local C, check = core.C, core.check

local facet = {
  Tensor = tensor.Tensor,
  is_tensor = tensor.is_tensor,
  tensor = tensor.tensor,
  empty = tensor.empty, zeros = tensor.zeros, ones = tensor.ones, full = tensor.full,
  arange = tensor.arange, rand = tensor.rand, randn = tensor.randn,
  empty_like = tensor.empty_like,
  manual_seed = tensor.manual_seed,
  generator_state = tensor.generator_state,
  version = ffi.string(C.facet_version()),
  library_path = core.path,
}

--- Threads for facet's loops and OpenBLAS (default: FACET_THREADS or all cores).
facet.set_threads, facet.get_threads = core.set_threads, core.get_threads

--- The OpenBLAS core in use (loads OpenBLAS if it is not loaded yet).
function facet.blas_core()
  local buf = ffi.new("char[128]")
  check(C.facet_blas_info(buf, 128))
  return ffi.string(buf)
end

--- Wall-clock seconds from a monotonic clock (for timing steps and images/s).
facet.clock = require("facet.sys").clock

--- The BLAS library file facet loaded (OpenMP OpenBLAS when installed).
function facet.blas_library()
  local buf = ffi.new("char[512]")
  check(C.facet_blas_library(buf, 512))
  return ffi.string(buf)
end

--- available(), device_count(), started(), built(), synchronize(), memory_stats(), empty_cache()
facet.cuda = require "facet.cuda"

facet.sys = require "facet.sys"
facet.expr = require "facet.expr"
facet.heads = require "facet.heads"
-- h.forward(x, y) for h:forward(x, y) is a clear error (facet.check.methods)
require("facet.check").methods(facet.heads.Head, "head", "a head")
require("facet.check").methods(facet.heads.Sharded, "head", "a head")
facet.nn = require "facet.nn"
facet.optim = require "facet.optim"
facet.models = require "facet.models"
facet.data = require "facet.data"
facet.eval = require "facet.eval"
facet.report = require "facet.report"
facet.dist = require "facet.dist"
facet.train = require("facet.train").train
facet.checkpoint = require "facet.checkpoint"
facet.load_checkpoint = facet.checkpoint.load

local safetensors = require "facet.safetensors"
facet.save_safetensors = safetensors.save
facet.load_safetensors = safetensors.load

--- facet.load(path) -> { name = tensor }: a .pth (PyTorch), a .safetensors
-- file or a facet checkpoint directory; facet.save(model_or_state, path)
-- writes the format the extension names (.pth, .pt, .safetensors, a
-- directory). facet.load_pth / save_pth: PyTorch's format alone.
local pth = require "facet.pth"
facet.load = function(path) return (pth.load_any(path, "facet.load")) end
facet.save = function(obj, path) return pth.save_any(obj, path, "facet.save") end
facet.load_pth = pth.load
facet.save_pth = pth.save

local npy = require "facet.npy"
facet.load_npy = npy.load
facet.save_npy = npy.save

--- facet.amp.scaler{...}: dynamic loss scaling for float16 training (docs/mixed-precision.md).
facet.amp = require "facet.amp"

--- facet.export_onnx(model, path [, opts]): the model as an ONNX inference graph (facet.onnx).
facet.onnx = require "facet.onnx"
facet.export_onnx = facet.onnx.export

return facet
