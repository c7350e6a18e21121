-- gen_cdef.lua: turns the preprocessed facet.h (stdin) into a Lua module
-- returning the cdef string (stdout). Only blank lines are dropped.
local src = io.read("*a")
local lines = {}
for line in src:gmatch("[^\n]+") do
  if line:match("%S") then lines[#lines + 1] = line end
end
io.write("-- Generated from core/include/facet.h by `cc -E -P`; do not edit.\n")
io.write("return [==[\n", table.concat(lines, "\n"), "\n]==]\n")
