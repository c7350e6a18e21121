# facet - build, test and install.
#   make run        install missing packages, build, run the main job
#   make test       install missing packages, build, run C tests and all specs
#   make sanitize   specs against a core built with ASan + UBSan (CPU only)
#   make test-emu   every spec on CUDA, the CUDA backend run by the CPU emulator (core/emu)
#   make bench      benchmarks (bench/*.lua)
#   make install    used by luarocks (PREFIX, LUADIR, LIBDIR, BINDIR)
#   make bundle     Debian packages for a GPU host without them (build/bundle, see README)
#   make gpu-check OUT=dir   build for this GPU, every spec on CUDA, benchmarks (tools/gpu_check.sh)
# CUDA is built when nvcc is found (FACET_CUDA=0 turns it off): core/cuda/*.cu, or
# else core/src/cuda_absent.c, implement core/src/cuda_backend.h (docs/gpu.md).
# test, sanitize, test-emu and fuzz build with JOBS parallel jobs (default: the cores).

CC       ?= cc
NVCC     ?= nvcc
BUILD    ?= build
CFLAGS   ?= -O3
# no FP traps or errno: lets GCC if-convert and vectorise the math loops (results unchanged)
CFLAGS_ALL = $(CFLAGS) -std=c11 -fPIC -fvisibility=hidden -fopenmp -fno-trapping-math -fno-math-errno -Wall -Wextra -Wno-unused-parameter -Icore/include -Icore/src
# nodelete: LuaJIT unloads the library at exit while OpenMP threads still run
LDLIBS_ALL = -fopenmp -ljpeg -lpng -ldl -lpthread -lm -Wl,-z,nodelete
FACET_CUDA ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
NVCCFLAGS ?= -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
LUAJIT   ?= luajit
# parallel jobs of the builds that `make test`, `sanitize` and `test-emu` start
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)

# MPI (core/src/dist.c) when mpicc is found (FACET_MPI=0 turns it off); NCCL
# (core/cuda/nccl.cu) when CUDA is built and nccl.h is under NCCL_HOME
# (default: the CUDA toolkit). docs/distributed.md.
COMMA     := ,
MPICC     ?= mpicc
FACET_MPI ?= $(if $(shell command -v $(MPICC) 2>/dev/null),1,0)
ifeq ($(FACET_MPI),1)
  MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null)
  MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
  MPI_RPATH  := $(patsubst -L%,-Wl$(COMMA)-rpath$(COMMA)%,$(filter -L%,$(MPI_LIBS)))
  LDLIBS_ALL += $(MPI_LIBS) $(MPI_RPATH)
endif
NCCL_HOME ?= $(CUDA_HOME)
FACET_NCCL := $(if $(and $(filter 1,$(FACET_CUDA)),$(wildcard $(NCCL_HOME)/include/nccl.h)),1,0)

C_SRC  := $(wildcard core/src/*.c)
CU_SRC := $(wildcard core/cuda/*.cu)
ifeq ($(FACET_CUDA),1)
  C_SRC  := $(filter-out core/src/cuda_absent.c,$(C_SRC))
  CU_OBJ := $(patsubst core/cuda/%.cu,$(BUILD)/obj/cuda/%.o,$(CU_SRC))
  # cuBLAS is not linked: core/cuda/cublas_load.cu opens it on first use
  LDLIBS_ALL += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
  CLTEST := $(BUILD)/test_cublas_load $(BUILD)/test_cublas_load_missing
  ifeq ($(FACET_NCCL),1)
    NCCL_LIBDIR := $(firstword $(wildcard $(NCCL_HOME)/lib64/libnccl.so* $(NCCL_HOME)/lib/libnccl.so*))
    LDLIBS_ALL += -L$(dir $(NCCL_LIBDIR)) -Wl,-rpath,$(dir $(NCCL_LIBDIR)) -lnccl
  endif
endif
# FACET_CUDA=emu: core/cuda/*.cu as C++ for the CPU, run by the CUDA emulator
# (core/emu, docs/cuda-emulator.md); each <<<>>> launch is rewritten into a call.
ifeq ($(FACET_CUDA),emu)
  C_SRC  := $(filter-out core/src/cuda_absent.c,$(C_SRC))
  # the emulator is cuBLAS itself (core/emu/cublas.cpp): no loader
  CU_SRC := $(filter-out core/cuda/cublas_load.cu,$(CU_SRC))
  EMU_CU := $(patsubst core/cuda/%,$(BUILD)/emu/%,$(filter-out core/cuda/cublas_load.cu,$(wildcard core/cuda/*.cu core/cuda/*.cuh)))
  CU_OBJ := $(patsubst core/cuda/%.cu,$(BUILD)/obj/emu-cuda/%.o,$(CU_SRC)) \
            $(patsubst core/emu/%.cpp,$(BUILD)/obj/emu/%.o,$(wildcard core/emu/*.cpp))
  LDLIBS_ALL += -lstdc++
endif
CXX      ?= g++
EMU_CXXFLAGS ?= -O2 -g
# The emulator contracts a * b + c into fused multiply-adds as nvcc does
# (its default --fmad=true), so a formula that must give the CPU's bits but
# leaves a multiply-add to the compiler fails here, not first on a GPU
# (docs/cuda-emulator.md, "Rounding"); on a CPU without FMA it cannot.
EMU_FMAD ?= $(shell grep -qw fma /proc/cpuinfo 2>/dev/null && echo 1 || echo 0)
ifeq ($(EMU_FMAD),1)
  EMU_CXXFLAGS += -mfma -ffp-contract=fast -DFACET_EMU_FMAD
endif
EMU_FLAGS = $(EMU_CXXFLAGS) -std=c++17 -fPIC -fvisibility=hidden -fno-trapping-math -fno-math-errno -Wall -Wextra \
            -Wno-unused-parameter -Wno-unused-function -Wno-unknown-pragmas -DFACET_NCCL=1 \
            -Icore/emu -Icore/include -Icore/src
C_OBJ  := $(patsubst core/src/%.c,$(BUILD)/obj/%.o,$(C_SRC))
LIB    := $(BUILD)/facet_core.so
CDEF   := $(BUILD)/lua/facet/cdef.lua
CTEST  := $(BUILD)/test_core
# the caching device allocator's bookkeeping, built from its source alone over malloc
CATEST := $(BUILD)/test_cache_alloc
# the kernels' fast 32-bit divisor (core/cuda/fast_div.cuh) against / and %, on the host
FDTEST := $(BUILD)/test_fast_div

.PHONY: all deps build run test test-c test-lua test-emu sanitize fuzz bench install clean bundle gpu-check

all: build
build: $(LIB) $(CDEF)

deps:
	@sh tools/deps.sh

$(BUILD)/obj/%.o: core/src/%.c core/include/facet.h $(wildcard core/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# the flags are part of the object: a build with and without MPI differ
$(BUILD)/obj/dist.o: core/src/dist.c core/include/facet.h $(wildcard core/src/*.h) $(BUILD)/mpi-$(FACET_MPI)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DFACET_MPI=$(FACET_MPI) $(MPI_CFLAGS) -c $< -o $@

$(BUILD)/mpi-$(FACET_MPI):
	@mkdir -p $(dir $@)
	@rm -f $(BUILD)/mpi-*
	@touch $@

$(BUILD)/obj/cuda/nccl.o: core/cuda/nccl.cu core/include/facet.h $(wildcard core/src/*.h core/cuda/*.cuh) $(BUILD)/nccl-$(FACET_NCCL)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 $(NVCCFLAGS) -DFACET_NCCL=$(FACET_NCCL) $(if $(filter 1,$(FACET_NCCL)),-I$(NCCL_HOME)/include) \
	  -Xcompiler -fPIC,-fvisibility=hidden -Icore/include -Icore/src -c $< -o $@

$(BUILD)/nccl-$(FACET_NCCL):
	@mkdir -p $(dir $@)
	@rm -f $(BUILD)/nccl-*
	@touch $@

$(BUILD)/obj/cuda/%.o: core/cuda/%.cu core/include/facet.h $(wildcard core/src/*.h core/cuda/*.cuh)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 $(NVCCFLAGS) -Xcompiler -fPIC,-fvisibility=hidden -Icore/include -Icore/src -c $< -o $@

# kernel<T><<<grid, block>>>(args) -> facet_emu::launch(kernel<T>, "kernel<T>", grid, block)(args)
EMU_REWRITE = sed -E 's/([A-Za-z_][A-Za-z0-9_]*(<[^<>()]*>)?)<<<(.*)>>>\(/facet_emu::launch(\1, "\1", \3)(/' $< > $@.tmp && \
	if grep -n '[A-Za-z0-9_>]<<<' $@.tmp; then echo "$<: a launch the emulator rewrite missed" >&2; exit 1; fi && \
	mv $@.tmp $@

$(BUILD)/emu/%: core/cuda/%
	@mkdir -p $(dir $@)
	$(EMU_REWRITE)

$(BUILD)/emu-tests/%.cu: core/tests/%.cu
	@mkdir -p $(dir $@)
	$(EMU_REWRITE)

$(BUILD)/test_emu: $(BUILD)/emu-tests/test_emu.cu $(EMU_CU) $(C_OBJ) $(CU_OBJ)
	$(CXX) $(EMU_FLAGS) -I$(BUILD)/emu -x c++ $< -x none $(C_OBJ) $(CU_OBJ) -o $@ $(LDFLAGS) $(LDLIBS_ALL)

# the emulator's NCCL between forked ranks (no kernels: no rewrite)
$(BUILD)/test_emu_nccl: core/tests/test_emu_nccl.cpp $(C_OBJ) $(CU_OBJ)
	$(CXX) $(EMU_FLAGS) $< $(C_OBJ) $(CU_OBJ) -o $@ $(LDFLAGS) $(LDLIBS_ALL)

# the kernels' math functions with CUDA's documented errors (core/emu/libm.h)
$(BUILD)/obj/emu-cuda/%.o: $(BUILD)/emu/%.cu $(EMU_CU) core/include/facet.h $(wildcard core/src/*.h core/emu/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -include core/emu/libm.h -x c++ -c $< -o $@

$(BUILD)/obj/emu/%.o: core/emu/%.cpp core/include/facet.h $(wildcard core/src/*.h core/emu/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -c $< -o $@

$(LIB): $(C_OBJ) $(CU_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS_ALL)

# The LuaJIT cdef is the preprocessed public header: the header is the only source.
$(CDEF): core/include/facet.h tools/gen_cdef.lua
	@mkdir -p $(dir $@)
	$(CC) -E -P -DFACET_CDEF core/include/facet.h | $(LUAJIT) tools/gen_cdef.lua > $@.tmp && mv $@.tmp $@

$(CTEST): core/tests/test_core.c core/tests/test_counts.h $(LIB)
	$(CC) $(CFLAGS_ALL) -o $@ $< -L$(BUILD) -l:facet_core.so -Wl,-rpath,'$$ORIGIN' $(LDLIBS_ALL)

# cuBLAS's loader alone, against the toolkit's library and a missing one
$(BUILD)/obj/cuda/cublas_load_missing.o: core/cuda/cublas_load.cu
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 $(NVCCFLAGS) -DFACET_CUBLAS_LIBRARY='"libfacet_no_such_cublas.so.0"' \
	  -Xcompiler -fPIC,-fvisibility=hidden -c $< -o $@

$(BUILD)/test_cublas_load: core/tests/test_cublas_load.c core/tests/test_counts.h $(BUILD)/obj/cuda/cublas_load.o
	$(CC) -std=c11 -O2 -Wall -Wextra -I$(CUDA_HOME)/include -o $@ $(filter-out %.h,$^) -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -ldl -lpthread -lstdc++

$(BUILD)/test_cublas_load_missing: core/tests/test_cublas_load.c core/tests/test_counts.h $(BUILD)/obj/cuda/cublas_load_missing.o
	$(CC) -std=c11 -O2 -Wall -Wextra -DFACET_EXPECT_MISSING -I$(CUDA_HOME)/include -o $@ $(filter-out %.h,$^) -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -ldl -lpthread -lstdc++

$(FDTEST): core/tests/test_fast_div.cpp core/tests/test_counts.h core/cuda/fast_div.cuh
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O2 -Wall -Wextra -Icore/cuda -o $@ $<

$(CATEST): core/tests/test_cache_alloc.c core/tests/test_counts.h core/src/cache_alloc.c core/src/cache_alloc.h core/include/facet.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ core/tests/test_cache_alloc.c core/src/cache_alloc.c $(LDFLAGS) -lpthread

run: deps build
	$(LUAJIT) bin/facet run recipes/quickstart.lua

test: deps
	$(MAKE) -j$(JOBS) build $(CTEST) $(CATEST) $(FDTEST) $(CLTEST)
	@FACET_BUILD=$(BUILD) sh spec/run.sh

# The stress run reruns the spec files of the kernels that can go wrong in
# ways one ordinary run cannot show, with every stress mode of the emulator
# at once (each would alone; together they cost one run, not four):
#   FACET_CUDA_INDEX64=1      the kernels' 64-bit index path (docs/gpu.md 'Index math')
#   FACET_EMU_ORDER=reverse   the threads of every block in reverse order: a missing
#                             __syncthreads shows in one order (shared memory, warp shuffles)
#   FACET_EMU_LIBM=cuda       expf, logf, powf, ... with CUDA's documented errors
#                             (core/emu/libm.h)
#   FACET_EMU_GEMM=scramble   every cuBLAS GEMM summing k in a GPU kernel's order
#                             (core/emu/cublas.cpp)
# A failure here names no mode: rerun the file with one mode at a time
# (docs/cuda-emulator.md).
STRESS_SPECS = spec/backend_ops_spec.lua spec/conv_spec.lua spec/batchnorm_spec.lua spec/pool_spec.lua \
               spec/upsample_spec.lua spec/elementwise_spec.lua spec/index_spec.lua spec/half_layers_spec.lua \
               spec/heads_spec.lua spec/reduce_spec.lua spec/normalize_spec.lua spec/activation_spec.lua \
               spec/optim_fused_spec.lua spec/partial_fc_spec.lua spec/sharded_head_spec.lua spec/half_spec.lua \
               spec/mixed_precision_spec.lua spec/matmul_spec.lua spec/train_spec.lua spec/subcenter_spec.lua \
               spec/elastic_spec.lua
STRESS_ENV = FACET_CUDA_INDEX64=1 FACET_EMU_ORDER=reverse FACET_EMU_LIBM=cuda FACET_EMU_GEMM=scramble

# every spec with its tensors on CUDA, the CUDA backend run on the CPU by the
# CUDA emulator (core/emu, docs/cuda-emulator.md), the emulator's own tests,
# and the stress run
test-emu: deps
	$(MAKE) -j$(JOBS) BUILD=build-emu FACET_CUDA=emu build build-emu/test_core build-emu/test_cache_alloc \
	        build-emu/test_fast_div build-emu/test_emu build-emu/test_emu_nccl
	build-emu/test_emu
	build-emu/test_emu_nccl
	FACET_BUILD=build-emu FACET_DEVICE=cuda sh spec/run.sh
	@echo "the stress run: the 64-bit index path, threads in reverse order, CUDA's libm errors, GEMMs in a GPU's order:"
	$(STRESS_ENV) FACET_BUILD=build-emu FACET_DEVICE=cuda sh spec/run.sh $(STRESS_SPECS)

sanitize: deps
	$(MAKE) -j$(JOBS) BUILD=build-asan FACET_CUDA=0 CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	        LDFLAGS="-fsanitize=address,undefined" build build-asan/test_core build-asan/test_cache_alloc \
	        build-asan/test_fast_div
	FACET_BUILD=build-asan FACET_SANITIZE=1 sh spec/run.sh

# libFuzzer targets (clang) for the RecordIO, .bin and image parsers, with
# ASan + UBSan; each runs FUZZ_SECONDS (20) from the committed seed corpus.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := recordio binfile image pth
FUZZ_SRC := $(filter-out core/src/cuda_absent.c,$(wildcard core/src/*.c)) core/src/cuda_absent.c
# the core compiled once for every target (instrumented, not linked with
# libFuzzer's main), on two jobs: the build was most of CI's fuzz stage
FUZZ_CFLAGS := -O1 -g -std=c11 -fsanitize=address,undefined -fno-sanitize-recover=all -fopenmp -Icore/include -Icore/src
FUZZ_OBJS := $(patsubst core/src/%.c,build-fuzz/obj/%.o,$(FUZZ_SRC))
build-fuzz/obj/%.o: core/src/%.c $(wildcard core/include/*.h core/src/*.h)
	@mkdir -p build-fuzz/obj
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
fuzz: deps
	@mkdir -p build-fuzz
	$(MAKE) -j$(JOBS) $(FUZZ_OBJS)
	@for t in $(FUZZ_TARGETS); do \
	  clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o build-fuzz/fuzz_$$t core/fuzz/fuzz_$$t.c $(FUZZ_OBJS) \
	    -ljpeg -lpng -ldl -lpthread -lm || exit 1; \
	done
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus_$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus_$$t core/fuzz/seeds/$$t \
	    > build-fuzz/fuzz_$$t.log 2>&1; rc=$$?; \
	  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|Done" build-fuzz/fuzz_$$t.log; \
	  if [ $$rc -ne 0 ]; then tail -40 build-fuzz/fuzz_$$t.log; exit 1; fi; \
	done

bench: deps build
	$(LUAJIT) bin/facet run bench/gemm.lua

bundle:
	sh tools/bundle.sh

OUT ?= gpu-check-out
gpu-check:
	sh tools/gpu_check.sh $(OUT)

PREFIX ?= /usr/local
LUADIR ?= $(PREFIX)/share/lua/5.1
LIBDIR ?= $(PREFIX)/lib/lua/5.1
BINDIR ?= $(PREFIX)/bin
install: build
	mkdir -p $(LUADIR)/facet $(LIBDIR) $(BINDIR)
	cp -R lua/facet/. $(LUADIR)/facet/
	cp $(CDEF) $(LUADIR)/facet/cdef.lua
	cp $(LIB) $(LIBDIR)/facet_core.so
	cp bin/facet $(BINDIR)/facet
	chmod +x $(BINDIR)/facet

clean:
	rm -rf $(BUILD) build-asan build-fuzz
