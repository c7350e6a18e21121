--- tools/gpu_check.sh: on a machine without a GPU it says so in one line and
-- exits 2 before doing any work. (Its dry run, --no-device, runs every spec and
-- is too slow for the suite; the GPU run itself is for a GPU host.)
local H = require "support.device"
local sh = require("support.files").sh

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
end)
