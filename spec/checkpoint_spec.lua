--- facet.checkpoint (save, latest, load, prune) and facet.json, whose numbers
-- read back exactly (training logs and trainer.json).
local H = require "support.device"
local facet = H.facet
local checkpoint = require "facet.checkpoint"
local json = require "facet.json"
local sys = require "facet.sys"
local cjson = require "cjson"

local tmpdir
setup(function() tmpdir = H.temp_dir() end)
teardown(function()
  H.remove_dir(tmpdir)
  collectgarbage()          -- the tensors' C memory is invisible to the GC's pacing: free it before the next file
end)

local function tiny()
  facet.manual_seed(3)
  local nn = facet.nn
  local net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
  local head = facet.heads.new("am", { classes = 3, dim = 4 })
  local opt = facet.optim.sgd({ net, head }, { lr = 0.1 * 0.1, momentum = 0.9 })
  return { model = net, head = head, optimizer = opt, rng = net:random_stream(), step = 0, epoch = 0, batch = 0,
    skipped = 0 }
end

describe("facet.checkpoint", function()
  it("saves, names the latest and loads model, head and optimizer back", function()
    local dir = tmpdir .. "/a"
    local st = tiny()
    st.step, st.epoch, st.batch, st.rng.offset = 7, 1, 3, 2 ^ 53 + 2
    assert.are.equal("step-00000007", checkpoint.save(dir, st))
    assert.are.equal(dir .. "/step-00000007", checkpoint.latest(dir))
    assert.are.same({ "latest", "step-00000007" }, sys.list_dir(dir))
    local other = tiny()
    other.model.modules[1].weight:fill_(0)
    other.head.weight:fill_(0)
    local info = checkpoint.load(dir, other.model, other.head, other.optimizer)
    assert.are.same({ 7, 1, 3 }, { info.step, info.epoch, info.batch })
    assert.are.equal(2 ^ 53 + 2, info.dropout_offset)          -- beyond cjson's 14 digits, exactly
    assert.are.equal(0.1 * 0.1, info.settings.lr)
    assert.are.same(H.values(st.model.modules[1].weight), H.values(other.model.modules[1].weight))
    assert.are.same(H.values(st.head.weight), H.values(other.head.weight))
    local alone = tiny()
    checkpoint.load(dir, alone.model)                           -- evaluation: the model alone
    assert.are.same(H.values(st.model.modules[1].weight), H.values(alone.model.modules[1].weight))
  end)

  it("keeps the two newest (by step number) and the latest, and clears saves cut short", function()
    local dir = tmpdir .. "/b"
    local st = tiny()
    for _, step in ipairs { 5, 10, 99999999, 100000000 } do
      st.step = step
      checkpoint.save(dir, st)
    end
    assert.are.same({ "latest", "step-100000000", "step-99999999" }, sys.list_dir(dir))
    -- a save killed half way, and a latest that names an older checkpoint (resumed by hand)
    assert(sys.mkdir_p(dir .. "/.step-100000001.tmp"))
    st.step = 3
    checkpoint.save(dir, st)
    assert.are.same({ "latest", "step-00000003", "step-100000000", "step-99999999" }, sys.list_dir(dir))
    checkpoint.prune(dir, 1)
    assert.are.same({ "latest", "step-00000003", "step-100000000" }, sys.list_dir(dir))
  end)

  it("reports a directory without checkpoints", function()
    H.assert_error(function() checkpoint.load(tmpdir .. "/none", tiny().model) end, "no checkpoint in")
    assert.is_nil(checkpoint.latest(tmpdir .. "/none"))
  end)
end)

describe("facet.json", function()
  it("writes numbers that read back exactly, and non-finite ones as null", function()
    local values = { 0.1 + 0.2, 1 / 3, 2 ^ 53, 2 ^ 53 + 2, 5e-324, 1.7976931348623157e308, -1e-300, 0.1 * 0.1, 3, 0,
      123456789012345678, math.pi }
    for _, v in ipairs(values) do
      assert.are.equal(v, cjson.decode(json.encode { x = v }).x)
      assert.are.equal(v, cjson.decode(json.encode { v })[1])
    end
    local back = cjson.decode(json.encode { a = 0 / 0, b = math.huge, c = -math.huge })
    assert.are.same({ a = cjson.null, b = cjson.null, c = cjson.null }, back)
  end)

  it("keeps arrays, nesting and any string", function()
    local v = { list = { 1, 0.1 + 0.2, { deep = 1 / 3 } }, s = "a \"q\" \n \1 1\1", ["\1" .. "2\1"] = "\1" .. "3\1", t = true }
    assert.are.same(v, cjson.decode(json.encode(v)))
  end)

  it("training logs read back exactly", function()
    local st = tiny()
    local X = facet.randn({ 12, 4 }, { seed = 1 })
    local r = facet.train { model = st.model, head = st.head, optimizer = st.optimizer, epochs = 2, quiet = true,
      data = facet.data.tensors { x = X, y = facet.tensor({ 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2 }, { dtype = "int64" }),
        batch_size = 4 },
      schedule = function(p) return 0.1 * 0.1 * (1 + p / 3) end, log = tmpdir .. "/log" }
    local n = 0
    for line in io.lines(tmpdir .. "/log/train.jsonl") do
      n = n + 1
      local e = cjson.decode(line)
      assert.are.equal(r.losses[n], e.loss)
      local progress = math.floor((n - 1) / 3) + ((n - 1) % 3) / 3     -- epoch + (batch - 1) / batches
      assert.are.equal(0.1 * 0.1 * (1 + progress / 3), e.lr)
      assert.are.equal(progress + 1 / 3, e.epoch)
    end
    assert.are.equal(6, n)
  end)
end)
