--- A rank that asks CUDA for its devices before facet.dist.init (spec/dist_spec.lua):
-- writes DIR/cuda-first-RANK.json with what facet.cuda.started() said before and after
-- the query, the device count, whether CUDA_VISIBLE_DEVICES was set and the outcome of
-- init (opts.gpu from "gpu=0").
-- Usage: mpirun -np 2 bin/facet run spec/support/cuda_first_worker.lua DIR [gpu=0]
local facet = require "facet"
local json = require "facet.json"
local dir, gpu = arg[1], arg[2] ~= "gpu=0"
local visible = (os.getenv("CUDA_VISIBLE_DEVICES") or "") ~= ""
local before = facet.cuda.started()
local count = facet.cuda.device_count()
local ok, err = pcall(facet.dist.init, { gpu = gpu })
local rank = tonumber(os.getenv("OMPI_COMM_WORLD_RANK") or "0")
local f = assert(io.open(("%s/cuda-first-%d.json"):format(dir, rank), "w"))
f:write(json.encode({ visible = visible, before = before, after = facet.cuda.started(), count = count, ok = ok,
  err = ok and "" or tostring(err) }))
f:close()
