-- luarocks spec: builds the C core with the project Makefile (CUDA too when
-- nvcc is on the PATH) and installs the Lua modules, facet_core.so and bin/facet.
--   luarocks --lua-version=5.1 --tree=DIR make --deps-mode=none rockspec/facet-scm-1.rockspec
rockspec_format = "3.0"
package = "facet"
version = "scm-1"
source = {
  url = "git+file:///facet",   -- installs are made from a checkout with `luarocks make`
}
description = {
  summary = "Face-recognition training engine: C/CUDA core, LuaJIT scripting",
  detailed = [[
facet trains face-recognition embedding models. Its core is C (OpenBLAS on
the CPU, CUDA and cuBLAS on the GPU) behind one stable header; everything
above it - tensors, nn modules, loss heads, optimizers, data pipelines and
evaluation - is scripted from LuaJIT through the FFI.
]],
  license = "MIT",
}
supported_platforms = { "linux" }
dependencies = {
  "lua == 5.1",     -- LuaJIT: the binding uses the FFI
  "argparse",       -- the command line and the recipes' options
  "lua-cjson",      -- JSON logs, reports and safetensors headers
  "luafilesystem",  -- directories without a shell (facet.sys)
}
external_dependencies = {
  OPENBLAS = { library = "openblas" },
  JPEG = { header = "jpeglib.h" },
  PNG = { header = "png.h" },
}
build = {
  type = "make",
  build_variables = {
    CFLAGS = "-O3",
    LUAJIT = "luajit",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
