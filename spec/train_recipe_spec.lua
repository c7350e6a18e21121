--- recipes/train.lua, run as a user would (bin/facet run ...), on a tiny
-- synthetic set unpacked into a folder of identity subfolders, a list file
-- and the RecordIO itself: each trains, writes its settings (which --config
-- reads back), its checkpoints and report; the command line overrides the
-- config file; mistakes are usage errors with a clear message.
local F = require "support.files"
local facet = require "facet"

local tmp = F.scratch()
local build = os.getenv("FACET_BUILD") or "build"

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function run(args)
  return F.sh(("FACET_BUILD=%s luajit bin/facet run recipes/train.lua %s"):format(q(build), args))
end

-- the settings file a run wrote, as a table
local function settings(dir)
  local chunk = assert(loadfile(dir .. "/config.lua"))
  return setfenv(chunk, {})()
end

describe("recipes/train.lua", function()
  local syn, faces, list
  setup(function()
    syn = tmp("syn")
    facet.data.synthetic { out = syn, identities = 6, images = 4, size = 24, pairs = 20, seed = 3 }
    faces = tmp("faces")
    facet.data.unpack(syn, faces)
    -- a list file over the same images, labels from 1 (a common mistake)
    local src = facet.data.scan_folder(faces)
    local lines = {}
    for i, path in ipairs(src.paths) do lines[i] = ("%s %d"):format(path, src.labels[i] + 1) end
    list = tmp("list.txt")
    F.write_file(list, table.concat(lines, "\n") .. "\n")
  end)

  it("trains from a folder with two verification sets and records what it ran with", function()
    local out = tmp("run-folder")
    local text, rc = run(("--data %s --model convnet --size 24 --emb 16 --batch 8 --epochs 1 --head mv-am " ..
      "--head-opt m=0.3 --head-opt h=fixed --eval a=%s --eval b=%s --eval-every 2 --print-every 1 --out %s")
      :format(q(faces), q(syn .. "_verify.bin"), q(syn .. "_verify.bin"), q(out)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("(6 identity folders): 24 images, 6 identities", 1, true), text)
    assert.truthy(text:find("eval step 2: a %d%.%d+  b %d%.%d+"), text)            -- during training
    assert.truthy(text:find("eval a%s+accuracy %d%.%d+ ± %d%.%d+"), text)             -- at the end
    assert.truthy(text:find("eval b%s+accuracy"), text)
    local s = settings(out)
    assert.are.equal("convnet", s.model)
    assert.are.equal(8, s.batch)
    assert.are.same({ m = 0.3, h = "fixed" }, s.head_opt)
    assert.are.same({ a = syn .. "_verify.bin", b = syn .. "_verify.bin" }, s.eval)
    assert.is_true(F.exists(out .. "/ckpt/latest"))
    assert.is_true(F.exists(out .. "/report.html"))
    assert.is_true(F.exists(out .. "/train.jsonl"))
  end)

  it("reads a .rec by path and a config file, the command line winning over the file", function()
    local out = tmp("run-rec")
    local cfg = tmp("cfg.lua")
    F.write_file(cfg, 'return { model = "convnet", epochs = 1, batch = 6, ["print-every"] = 50, emb = 8,' ..
      ' head_opt = { m = 0.25 } }\n')
    local text, rc = run(("--data %s --config %s --batch 4 --size 24 --steps 2 --head am --out %s")
      :format(q(syn .. ".rec"), q(cfg), q(out)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("24 images, 6 identities", 1, true), text)
    assert.truthy(text:find("trained to step 2 (2 steps here", 1, true), text)
    -- off a terminal, a run shorter than --print-every still prints its first and last step
    assert.truthy(text:find("\nstep 1 ", 1, true) and text:find("\nstep 2 ", 1, true), text)
    -- --steps 2 is no multiple of --checkpoint-every (2000): the end still writes a checkpoint
    assert.truthy(F.exists(out .. "/ckpt/latest"), "no checkpoint after --steps 2")
    -- resuming says from where, and counts only its own steps
    local text2, rc2 = run(("--data %s --config %s --batch 4 --size 24 --steps 3 --head am --out %s --resume")
      :format(q(syn .. ".rec"), q(cfg), q(out)))
    assert.are.equal(0, rc2, text2)
    assert.truthy(text2:find("facet.train: resumed from step 2 (epoch 1, batch 2 of 6)", 1, true), text2)
    assert.truthy(text2:find("trained to step 3 (1 steps here", 1, true), text2)
    local s = settings(out)
    assert.are.equal(4, s.batch)          -- the flag
    assert.are.equal(8, s.emb)            -- the file
    assert.are.equal(50, s.print_every)   -- the file, dash spelling
    assert.are.equal(0.1, s.lr)           -- the default
    assert.are.same({ m = 0.25 }, s.head_opt)
    -- the recorded settings run again as a config file
    local again = tmp("run-again")
    local text2, rc2 = run(("--config %s --steps 1 --out %s"):format(q(out .. "/config.lua"), q(again)))
    assert.are.equal(0, rc2, text2)
    local s2 = settings(again)
    for _, k in ipairs { "model", "batch", "emb", "head", "size", "data" } do assert.are.equal(s[k], s2[k], k) end
  end)

  it("runs Sub-center ArcFace's pipeline: sub-centres, facet clean, then on from its weights (--init)", function()
    local out = tmp("run-sub")
    local text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 6 --steps 3 --head arc " ..
      "--head-opt subcenters=2 --out %s"):format(q(syn .. ".rec"), q(out)))
    assert.are.equal(0, rc, text)
    -- the sub-centre count comes from the checkpoint's trainer.json
    text, rc = F.sh(("FACET_BUILD=%s luajit bin/facet clean %s %s -o %s --threshold 80"):format(q(build),
      q(out .. "/ckpt"), q(syn .. ".rec"), q(out .. "/clean")))
    assert.are.equal(0, rc, text)
    local kept = tonumber(text:match("kept (%d+) of 24 images"))
    assert.is_truthy(kept, text)
    assert.are.equal(kept, facet.data.recordio(out .. "/clean"):num_images())
    -- one step at a vanishing rate: the checkpoint holds the weights it started from
    local out2 = tmp("run-sub2")
    text, rc = run(("--data %s --init %s --model convnet --size 24 --emb 8 --batch 6 --steps 1 --lr 1e-30 " ..
      "--head arc --out %s"):format(q(out .. "/clean.rec"), q(out .. "/clean_init.safetensors"), q(out2)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("initialised from " .. out .. "/clean_init.safetensors (backbone and head)", 1, true), text)
    local init = facet.load_safetensors(out .. "/clean_init.safetensors")
    local ckpt = facet.checkpoint.latest(out2 .. "/ckpt")
    local got = facet.load_safetensors(ckpt .. "/model.safetensors")
    assert.are.same({ 6, 8 }, got["head.weight"]:shape())
    for name, t in pairs(init) do
      -- BatchNorm's running statistics move in training mode
      if not name:find("running_") and not name:find("num_batches") then
        assert.are.same(t:totable(), got[name]:totable(), name)
      end
    end
    -- a checkpoint directory gives its head too; a curricular head keeps its own t (the file has none)
    local out3 = tmp("run-sub4")
    text, rc = run(("--data %s --init %s --model convnet --size 24 --emb 8 --batch 6 --steps 1 --lr 1e-30 " ..
      "--head curricular --head-opt subcenters=2 --out %s"):format(q(syn .. ".rec"), q(out .. "/ckpt"), q(out3)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("(backbone and head)", 1, true), text)
    assert.truthy(text:find("has no head.t; the head keeps its own", 1, true), text)
    local first = facet.load_safetensors(facet.checkpoint.latest(out .. "/ckpt") .. "/model.safetensors")
    local after = facet.load_safetensors(facet.checkpoint.latest(out3 .. "/ckpt") .. "/model.safetensors")
    assert.are.same(first["head.weight"]:totable(), after["head.weight"]:totable())
    -- a head of another shape is a usage error naming both shapes
    text, rc = run(("--data %s --init %s --model convnet --size 24 --emb 8 --batch 6 --steps 1 --head arc " ..
      "--head-opt subcenters=3 --out %s"):format(q(out .. "/clean.rec"), q(out .. "/clean_init.safetensors"),
      q(tmp("run-sub3"))))
    assert.are_not.equal(0, rc)
    assert.truthy(text:find("head.weight is 6x8, the head's 18x8", 1, true), text)
  end)

  it("takes arcface_torch's settings: --optimizer adamw, --schedule poly with --warmup, --clip", function()
    local out = tmp("run-adamw")
    local text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 6 --epochs 2 --head arc " ..
      "--optimizer adamw --lr 1e-3 --weight-decay 0.1 --schedule poly --warmup 0.5 --clip 5 --out %s")
      :format(q(syn .. ".rec"), q(out)))
    assert.are.equal(0, rc, text)
    local s = settings(out)
    assert.are.same({ "adamw", "poly", 0.5, 5 }, { s.optimizer, s.schedule, s.warmup, s.clip })
    -- 24 images, 4 batches an epoch: step n runs at progress (n - 1) / 4 epochs, the rate
    -- 1e-3 (1 - e / 2)^2, times e / 0.5 during the warm-up
    local n = 0
    for line in io.lines(out .. "/train.jsonl") do
      local r = require("facet.json").decode(line)
      if r.step then
        n = n + 1
        local e = (r.step - 1) / 4
        local want = 1e-3 * (1 - e / 2) ^ 2 * math.min(1, e / 0.5)
        assert.is_true(math.abs(r.lr - want) <= 1e-12, ("step %d: lr %.9g, want %.9g"):format(r.step, r.lr, want))
      end
    end
    assert.are.equal(8, n)
    -- cosine, and the mistakes
    text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 6 --epochs 2 --steps 1 --schedule cosine " ..
      "--out %s"):format(q(syn .. ".rec"), q(tmp("run-cos"))))
    assert.are.equal(0, rc, text)
    for _, bad in ipairs { { "--optimizer adam", "--optimizer must be one of sgd, adamw" },
      { "--warmup 2", "--warmup 2 must be shorter than --epochs 2" } } do
      text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 6 --epochs 2 %s --out %s"):format(q(syn .. ".rec"),
        bad[1], q(tmp("run-bad"))))
      assert.are_not.equal(0, rc)
      assert.truthy(text:find(bad[2], 1, true), text)
    end
  end)

  it("trains in bf16 and fp16 (--precision)", function()
    for _, prec in ipairs { "bf16", "fp16" } do
      local out = tmp("run-" .. prec)
      local text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 8 --steps 2 --head am " ..
        "--precision %s --out %s"):format(q(faces), prec, q(out)))
      assert.are.equal(0, rc, text)
      assert.are.equal(prec, settings(out).precision)
      assert.truthy(text:find("trained to step 2", 1, true), text)
    end
  end)

  it("trains data parallel on 2 ranks (--dist --sample --allreduce-dtype): a sharded head, rank 0 alone prints", function()
    local mpi = require "support.mpi"
    if not mpi.available() then return pending("no mpirun (Open MPI) here") end
    local out = tmp("run-dist")
    local text, rc = mpi.run(2, { "recipes/train.lua", "--data", faces, "--model", "convnet", "--size", "24",
      "--emb", "8", "--batch", "8", "--steps", "3", "--head", "am", "--dist", "--sync-bn", "--sample", "0.5",
      "--allreduce-dtype", "fp16", "--eval", "v=" .. syn .. "_verify.bin", "--eval-every", "3", "--out", out },
      { limit = 180 })
    assert.are.equal(0, rc, text)
    local _, summaries = text:gsub("24 images, 6 identities; convnet %(%d+ parameters%) %+ am; 3 batches of 8 an epoch, 12 epochs, 2 ranks", "")
    assert.are.equal(1, summaries, text)
    local _, ends = text:gsub("trained to step 3", "")
    assert.are.equal(1, ends, text)
    assert.truthy(text:find("eval v%s+accuracy %d%.%d+"), text)
    assert.is_true(F.exists(out .. "/ckpt/latest"))
    assert.is_true(F.exists(out .. "/report.html"))
    assert.are.equal(0.5, settings(out).sample)
    -- the 16-bit wire needs --dist
    local t2, rc2 = run(("--data %s --model convnet --size 24 --steps 1 --allreduce-dtype bf16 --out %s")
      :format(q(faces), q(tmp("run-nodist"))))
    assert.are_not.equal(0, rc2)
    assert.truthy(t2:find("--allreduce-dtype bf16 needs --dist", 1, true), t2)
  end)

  it("warns when a list's labels start above 0", function()
    local out = tmp("run-list")
    local text, rc = run(("--data %s --model convnet --size 24 --emb 8 --batch 8 --steps 1 --head am --out %s")
      :format(q(list), q(out)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("labels of .* start at 1, not 0: classes 0%-0 get no images"), text)
    assert.truthy(text:find("24 images, 7 identities", 1, true), text)
  end)

  it("walks a new user's path: pack a folder, train mobilefacenet + mv-am with 2 eval sets, eval by path, report", function()
    local prefix, out = tmp("packed/train"), tmp("run-path")
    local text, rc = F.sh(("FACET_BUILD=%s luajit bin/facet pack %s %s"):format(q(build), q(faces), q(prefix)))
    assert.are.equal(0, rc, text)
    assert.truthy(text:find("24 images, 6 identities", 1, true), text)
    text, rc = run(("--data %s --model mobilefacenet --size 32 --emb 16 --batch 8 --steps 3 --head mv-am " ..
      "--eval lfw=%s --eval other=%s --eval-every 3 --out %s"):format(q(prefix .. ".rec"), q(syn .. "_verify.bin"),
      q(syn .. "_verify.bin"), q(out)))
    assert.are.equal(0, rc, text)
    -- the checkpoint knows its model: eval needs only its path (the run's directory or one step)
    for _, ck in ipairs { out .. "/ckpt", out .. "/ckpt/step-00000003" } do
      local ev, erc = F.sh(("FACET_BUILD=%s luajit bin/facet eval %s --bin %s"):format(q(build), q(ck),
        q(syn .. "_verify.bin")))
      assert.are.equal(0, erc, ev)
      assert.truthy(ev:find("model: mobilefacenet{ emb = 16, size = 32 }, as the checkpoint", 1, true), ev)
      assert.truthy(ev:find("syn_verify%.bin%s+20%s+%d%.%d+"), ev)
    end
    -- a flag still overrides what the checkpoint says
    local ev = F.sh(("FACET_BUILD=%s luajit bin/facet eval %s --emb 32 --bin %s"):format(q(build), q(out .. "/ckpt"),
      q(syn .. "_verify.bin")))
    -- (the shapes then disagree: a clear refusal naming both)
    assert.truthy(ev:find("32x512x1x1 in the model, 16x512x1x1 in the checkpoint", 1, true), ev)
    local rep, rrc = F.sh(("FACET_BUILD=%s luajit bin/facet report %s"):format(q(build), q(out)))
    assert.are.equal(0, rrc, rep)
    local html = F.read_file(out .. "/report.html")
    assert.truthy(html:find("settings of run-path", 1, true), "the settings are in the report")
    assert.truthy(html:find(">run-path lfw<", 1, true) or html:find("run-path lfw", 1, true), "the eval sets plotted")
  end)

  it("a model saved with facet.save carries its build in the .safetensors metadata", function()
    facet.manual_seed(5)
    local net = facet.models.mobilefacenet { emb = 8, size = 32, arch = "mbf" }
    facet.save(net, tmp("m.safetensors"))
    local spec = require("facet.backbone").described(tmp("m.safetensors"))
    assert.are.same({ name = "mobilefacenet", opts = { emb = 8, size = 32, arch = "mbf" } }, spec)
    local model = require("facet.backbone").load(facet, { checkpoint = tmp("m.safetensors") })
    local x = facet.randn({ 2, 3, 32, 32 }, { seed = 1 })
    net:evaluate()
    assert.are.same(net:forward(x):totable(), model:forward(x):totable())
  end)

  it("a ViT saved with facet.save comes back with its variant and depth; --variant and --depth override them", function()
    facet.manual_seed(6)
    local net = facet.models.vit { variant = "s", depth = 1, emb = 16 }
    facet.save(net, tmp("vit.safetensors"))
    local backbone = require "facet.backbone"
    local model, spec = backbone.load(facet, { checkpoint = tmp("vit.safetensors") })
    assert.are.same({ name = "vit", opts = { variant = "s", depth = 1, emb = 16, size = 112 } }, spec)
    local x = facet.randn({ 2, 3, 112, 112 }, { seed = 1 })
    net:evaluate()
    assert.are.same(net:forward(x):totable(), model:forward(x):totable())
    -- another variant's shapes disagree with the file: a clear refusal
    for _, o in ipairs { { variant = "t", want = "shape" }, { depth = 2, want = "blocks.1" } } do
      local ok, err = pcall(backbone.load, facet, { checkpoint = tmp("vit.safetensors"), variant = o.variant,
        depth = o.depth })
      assert.is_false(ok)
      assert.truthy(tostring(err):find(o.want, 1, true), tostring(err))
    end
  end)

  local mistakes = {
    { "--data /nonexistent/faces", "--data /nonexistent/faces is neither a folder, a list file nor a .rec" },
    { "", "--data is required" },
    { "--data . --model resnet", "--model must be one of" },
    { "--data . --head cosfce", "--head must be one of" },
    { "--data . --batch 0", "--batch must be an integer" },
    { "--data . --head-opt m", "--head-opt wants NAME=VALUE, got 'm'" },
    { "--data . --model mobilefacenet --depth 50", "--depth is for --model iresnet" },
    { "--data . --model iresnet --variant b", "--variant is for --model vit" },
    { "--data . --precision fp8", "--precision must be fp32, bf16 or fp16, got 'fp8'" },
  }
  for _, m in ipairs(mistakes) do
    it(("'%s' is a usage error"):format(m[1]), function()
      local text, rc = run(m[1] .. " --out " .. q(tmp("never")))
      assert.are.equal(1, rc, text)   -- argparse's usage error
      assert.truthy(text:find(m[2], 1, true), text)
      assert.falsy(text:find("traceback", 1, true), text)
    end)
  end

  it("rejects an unknown or ill-typed setting in the config file", function()
    local bad = tmp("bad.lua")
    F.write_file(bad, "return { epochz = 3 }\n")
    local text, rc = run("--data . --config " .. q(bad))
    assert.are.equal(1, rc, text)   -- argparse's usage error
    assert.truthy(text:find("unknown setting 'epochz'", 1, true), text)
    F.write_file(bad, "return { lr = -1 }\n")
    text, rc = run("--data . --config " .. q(bad))
    assert.are.equal(1, rc, text)   -- argparse's usage error
    assert.truthy(text:find("--lr must be a number > 0, got '-1'", 1, true), text)
    F.write_file(bad, "os.exit(7)\n")   -- a config is data: no os, io or require
    text, rc = run("--data . --config " .. q(bad))
    assert.are.equal(1, rc, text)   -- argparse's usage error
    assert.truthy(text:find("must return a table of settings", 1, true), text)
  end)
end)
