--- tools/gpu_check.sh: on a machine without a GPU it says so in one line and
-- exits 2 before doing any work. (Its dry run, --no-device, runs every spec and
-- is too slow for the suite; the GPU run itself is for a GPU host.) Its
-- collectives step, spec/support/nccl_check.lua, runs here on CPU tensors
-- through MPI on 1 and 2 ranks (the same checks the GPU host runs on one rank
-- through NCCL), on CUDA tensors through NCCL on 1, 2 and 3 ranks where each
-- rank can have a GPU (the CUDA emulator), and says why it cannot run on CUDA
-- where it cannot.
local H = require "support.device"
local sh = require("support.files").sh
local mpi = require "support.mpi"
local facet = require "facet"

describe("tools/gpu_check.sh", function()
  it("without a GPU prints one line and exits 2", function()
    if os.execute("command -v nvidia-smi >/dev/null 2>&1") == 0 then
      pending("nvidia-smi is on the PATH: this machine has a GPU driver")
      return
    end
    local dir = H.temp_dir()
    -- a dry run in the environment (tools/gpu_check.sh running its own specs) must not leak in
    local t0 = os.time()
    local out, rc = sh(("env -u FACET_GPU_CHECK_DRY sh tools/gpu_check.sh %s/out"):format(dir))
    local made = os.execute(("test -e %s/out"):format(dir)) == 0
    H.remove_dir(dir)
    assert.are.equal(2, rc, out)
    assert.truthy(out:match("^gpu_check: no GPU[^\n]*\n$"), out)
    assert.is_false(made, "OUTDIR was created")
    assert.is_true(os.time() - t0 <= 2)
  end)

  it("asks for OUTDIR", function()
    local out, rc = sh("env -u FACET_GPU_CHECK_DRY sh tools/gpu_check.sh")
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("usage: tools/gpu_check.sh", 1, true), out)
  end)

  describe("spec/support/nccl_check.lua", function()
    local function runnable()
      local ok, why = mpi.available()
      if not ok then pending(why); return false end
      if not facet.dist.built().mpi then pending("facet was built without MPI"); return false end
      return true
    end

    it("passes its checks on CPU tensors on one rank (the training runs too) and on two", function()
      if not runnable() then return end
      local out, rc = mpi.run(1, { "spec/support/nccl_check.lua", "cpu" }, { limit = 120 })
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("nccl_check: rank 0 of 1, cpu tensors (MPI)", 1, true), out)
      assert.truthy(out:find("ok facet.train dist = true, sync_bn = true: the reference's losses bit for bit", 1, true), out)
      assert.truthy(out:find("\n12 passed, 0 failed\n", 1, true), out)
      assert.falsy(out:find("FAIL", 1, true), out)
      out, rc = mpi.run(2, { "spec/support/nccl_check.lua", "cpu" }, { limit = 120 })
      assert.are.equal(0, rc, out)
      -- one line per rank; two ranks printing at once may share a newline
      local _, n = out:gsub("%f[%d]8 passed, 0 failed", "")
      assert.are.equal(2, n, out)
    end)

    -- where every rank can have a GPU of its own (the CUDA emulator, whose NCCL runs between the
    -- processes; or two GPUs): the GPU check's NCCL step on 1, 2 and 3 ranks. FACET_EMU_NCCL_SLOT_KB=1
    -- makes the emulator move every collective of more than 256 values in several chunks.
    it("passes its checks on CUDA tensors through NCCL on 1, 2 and 3 ranks", function()
      if not runnable() then return end
      if H.ranks_device() ~= "cuda" then pending("needs FACET_DEVICE=cuda and a GPU for each rank"); return end
      local env = { FACET_EMU_NCCL_SLOT_KB = "1" }
      local out, rc = mpi.run(1, { "spec/support/nccl_check.lua", "cuda" }, { limit = 300, env = env })
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("nccl_check: rank 0 of 1, cuda tensors (NCCL)", 1, true), out)
      assert.truthy(out:find("\n12 passed, 0 failed\n", 1, true), out)
      for _, np in ipairs { 2, 3 } do
        out, rc = mpi.run(np, { "spec/support/nccl_check.lua", "cuda" }, { limit = 300, env = env })
        assert.are.equal(0, rc, out)
        assert.truthy(out:find(("rank %d of %d, cuda tensors (NCCL)"):format(np - 1, np), 1, true), out)
        local _, n = out:gsub("%f[%d]8 passed, 0 failed", "")
        assert.are.equal(np, n, out)
        assert.falsy(out:find("FAIL", 1, true), out)
      end
      -- a launcher that shows each rank every GPU of the node (srun --gpus-per-node): facet.dist.init
      -- gives rank r the r-th entry (without it both take GPU 0, which NCCL refuses: "duplicate GPU")
      env.CUDA_VISIBLE_DEVICES = "0,1"
      out, rc = mpi.run(2, { "spec/support/nccl_check.lua", "cuda" }, { limit = 300, env = env })
      assert.are.equal(0, rc, out)
      local _, n = out:gsub("%f[%d]8 passed, 0 failed", "")
      assert.are.equal(2, n, out)
    end)

    it("says why it cannot run: no launcher, no NCCL or no GPU, a bad device", function()
      if not runnable() then return end
      local out, rc = mpi.run(0, { "spec/support/nccl_check.lua", "cpu" })
      assert.are.equal(2, rc, out)
      assert.truthy(out:find("cannot run: not started by a launcher", 1, true), out)
      if not facet.cuda.available() then
        out, rc = mpi.run(1, { "spec/support/nccl_check.lua", "cuda" })
        assert.are_not.equal(0, rc, out)
        assert.truthy(out:find("cannot run: facet was built without NCCL", 1, true) or
          out:find("cannot run: no CUDA device", 1, true), out)
      end
      out, rc = mpi.run(0, { "spec/support/nccl_check.lua", "tpu" })
      assert.are.equal(3, rc, out)
      assert.truthy(out:find("nccl_check: the device must be cuda or cpu, got tpu", 1, true), out)
    end)
  end)
end)
