// Runs an ONNX model in onnxruntime-node (CPU) for the export spec:
//   node spec/support/onnxruntime.js MODEL.onnx INPUT.f32 N C H W OUTPUT.f32
// INPUT.f32 holds N*C*H*W little-endian float32 values; the model's first
// output is written to OUTPUT.f32 the same way, and its shape to stdout.
// NODE_PATH must reach the node_modules that tools/onnxruntime.sh installed.
"use strict";
const fs = require("fs");
const ort = require("onnxruntime-node");

async function main() {
  const [model, input, n, c, h, w, output] = process.argv.slice(2);
  const dims = [n, c, h, w].map(Number);
  const buf = fs.readFileSync(input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: "disabled" });
  const feeds = {};
  feeds[session.inputNames[0]] = new ort.Tensor("float32", data, dims);
  const result = await session.run(feeds);
  const out = result[session.outputNames[0]];
  fs.writeFileSync(output, Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
  console.log(session.inputNames[0] + " -> " + session.outputNames[0] + " " + out.dims.join("x"));
}

main().catch((e) => { console.error(String(e && e.message || e)); process.exit(1); });
