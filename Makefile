# Alice in C -- build, demo, tests, benchmarks.
#   make            builds bin/alice (CUDA compiled in when nvcc is found; USE_CUDA=0|1 overrides)
#   make demo       end-to-end run on synthetic phantoms
#   make test       installs/finds dependencies, builds, runs every test
#   make bench      benchmarks (figures printed as ratios against a reference)
# BUILD=<dir> keeps object files apart (parallel work trees, CI).
# CUDA_HOME=<dir> the toolkit (default: from nvcc on PATH); CUDA_LIBDIR=<dir> where its cuBLAS and
# cudart libraries are (default $(CUDA_HOME)/lib64; e.g. .../targets/x86_64-linux/lib or
# /usr/lib/x86_64-linux-gnu on distribution packages); NCCL_HOME / CUDNN_HOME: see below.

# `make` alone builds `all`, whatever rule comes first below (the cuDNN attention object's rule
# precedes it).
.DEFAULT_GOAL := all

BUILD    ?= build
BIN      ?= bin
NVCC     ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
USE_CUDA ?= $(if $(CUDA_HOME),1,0)
CUDA_ARCH ?= sm_90
CUDA_LIBDIR ?= $(CUDA_HOME)/lib64

# The Python that has numpy/h5py/torch (Debian's), not whatever python3 is first on PATH.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import numpy, h5py' >/dev/null 2>&1 && { echo $$p; break; }; done)
export PYTHON

CC       := mpicc
HDF5_CFLAGS := $(shell pkg-config --cflags hdf5-openmpi 2>/dev/null)
HDF5_LIBS   := $(shell pkg-config --libs hdf5-openmpi 2>/dev/null)
CPPFLAGS += -I. -Isrc -Iio -I/usr/include/nifti $(HDF5_CFLAGS) -D_GNU_SOURCE
CFLAGS   ?= -O2 -g -march=x86-64-v2
CFLAGS   += -std=c11 -fopenmp -Wall -Wextra -Werror -Wno-error=deprecated-declarations
# OpenBLAS built for OpenMP shares our OpenMP thread pool; the default pthread build keeps a
# second pool of spinning threads that fights OpenMP for the cores (measured 30x slower steps
# on 2 busy cores). Debian ships the OpenMP build without a -dev symlink: link it by path.
OPENBLAS_OPENMP ?= /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0
comma := ,
OPENBLAS_LIB := $(if $(wildcard $(OPENBLAS_OPENMP)),$(OPENBLAS_OPENMP) -Wl$(comma)-rpath$(comma)$(dir $(OPENBLAS_OPENMP)),-lopenblas)
LDLIBS   += $(HDF5_LIBS) -lnifti2 -lznz -lz $(OPENBLAS_LIB) -lm -lpthread -fopenmp

LIB_SRC  := $(shell find src io -name '*.c' ! -name main.c | sort)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_SRC   := $(sort $(wildcard cuda/*.cu))
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_SRC := $(sort $(wildcard tests/bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/tests/%)

# Clusters keep cuDNN and NCCL apart from the toolkit: NCCL_HOME / CUDNN_HOME add their
# include and lib directories (see docs/OPERATIONS.md).
CUDA_EXTRA_HOMES := $(strip $(NCCL_HOME) $(CUDNN_HOME))
ifeq ($(USE_CUDA),1)
CPPFLAGS += -DALICE_CUDA -I$(CUDA_HOME)/include $(foreach h,$(CUDA_EXTRA_HOMES),-I$(h)/include)
LDLIBS   += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) \
            $(foreach h,$(CUDA_EXTRA_HOMES),-L$(h)/lib -L$(h)/lib64 -Wl,-rpath,$(h)/lib -Wl,-rpath,$(h)/lib64) \
            -lcudnn -lnccl -lcudart -lstdc++ -ldl
LIB_OBJ  += $(CU_OBJ)
NVCCFLAGS ?= -O3 -arch=$(CUDA_ARCH) -std=c++17 -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings
NVCCFLAGS += -I. -Isrc -Iio -DALICE_CUDA $(HDF5_CFLAGS) $(foreach h,$(CUDA_EXTRA_HOMES),-I$(h)/include)
endif

# cuDNN's fused attention (attention_kernel = cudnn) needs NVIDIA's header-only cudnn-frontend,
# which scripts/deps.sh unpacks into .devdeps/cudnn-frontend (CUDNN_FRONTEND_INCLUDE overrides).
# Only cuda/cuda_attention_cudnn.cu sees it (heavy headers: one translation unit; -isystem: their
# own warnings are not ours). Without it that file compiles a variant that refuses the kernel
# with a message naming scripts/deps.sh. The state file makes the object follow the headers
# appearing or going away.
CUDNN_FRONTEND_INCLUDE ?= .devdeps/cudnn-frontend/include
CUDNN_FRONTEND_FOUND := $(wildcard $(CUDNN_FRONTEND_INCLUDE)/cudnn_frontend.h)
CUDNN_FRONTEND_STATE := $(if $(CUDNN_FRONTEND_FOUND),$(abspath $(CUDNN_FRONTEND_INCLUDE)),none)
CUDNN_FRONTEND_FLAGS := -isystem $(CUDNN_FRONTEND_INCLUDE) -DALICE_CUDNN_FRONTEND -DCUDNN_FRONTEND_SKIP_JSON_LIB
# Headers that do not compile against the cuDNN at hand (an old cuDNN on some machine) must not
# cost the whole build: the compiler's errors are printed, then the variant is compiled that
# refuses the kernel naming that reason (ALICE_CUDNN_FRONTEND_BROKEN).
$(BUILD)/cuda/cuda_attention_cudnn.o: cuda/cuda_attention_cudnn.cu $(BUILD)/cuda/cudnn_frontend.state
	@mkdir -p $(dir $@)
	@echo "  NVCC  $<$(if $(CUDNN_FRONTEND_FOUND), (with the cuDNN frontend headers))"
	@$(if $(CUDNN_FRONTEND_FOUND),$(NVCC) $(NVCCFLAGS) $(CUDNN_FRONTEND_FLAGS) -MMD -MP -c $< -o $@ || \
	  { echo "WARNING: cuda/cuda_attention_cudnn.cu does not compile with the cuDNN frontend headers" \
	         "($(CUDNN_FRONTEND_INCLUDE)) against this cuDNN (errors above): building it without them;" \
	         "attention_kernel = cudnn will be refused" >&2; \
	    $(NVCC) $(NVCCFLAGS) -DALICE_CUDNN_FRONTEND_BROKEN -MMD -MP -c $< -o $@; },$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@)
# cuBLAS, cuBLASLt and NVRTC (which the frontend's plan code references for its experimental
# engines) are not linked: cuda/cuda_lazy_libs.cu loads them at their first call, so processes
# that never reach cuBLAS (CPU commands of a CUDA build) do not pay cuBLASLt's ~94 MB.
$(BUILD)/cuda/cudnn_frontend.state: cudnn-frontend-state-check
	@mkdir -p $(dir $@)
	@echo '$(CUDNN_FRONTEND_STATE)' | cmp -s - $@ || echo '$(CUDNN_FRONTEND_STATE)' > $@
.PHONY: cudnn-frontend-state-check
cudnn-frontend-state-check:

# The CUPTI kernel profiler: an injection library the CUDA driver loads through
# CUDA_INJECTION64_PATH (scripts/kernel_profile.sh), never part of libalice or alice.
# CUPTI_HOME=<dir> holds include/cupti.h (default: the toolkit, or its extras/CUPTI).
CUPTI_HOME ?= $(firstword $(foreach d,$(CUDA_HOME) $(CUDA_HOME)/extras/CUPTI,$(if $(wildcard $(d)/include/cupti.h),$(d))))
CUPTI_LIBDIR ?= $(firstword $(foreach d,$(CUPTI_HOME)/lib64 $(CUPTI_HOME)/lib $(CUDA_LIBDIR) $(CUDA_HOME)/lib64 \
                  $(CUDA_HOME)/extras/CUPTI/lib64,$(if $(wildcard $(d)/libcupti.so*),$(d))))
# libcupti.so, or libcupti.so.N where no development link exists (pip wheels)
CUPTI_LIB := $(firstword $(wildcard $(CUPTI_LIBDIR)/libcupti.so $(CUPTI_LIBDIR)/libcupti.so.*))
CUPTI_FOUND := $(and $(wildcard $(CUPTI_HOME)/include/cupti.h),$(CUPTI_LIB))
KERNEL_PROFILE_SO := $(BUILD)/lib/libalice_kernel_profile.so
PROFILER_CC ?= cc

.PHONY: all deps demo test test-fast bench clean cuda-objs
all: $(BIN)/alice

$(BIN)/alice: $(BUILD)/src/main.o $(BUILD)/libalice.a
	@mkdir -p $(dir $@)
	@echo "  LD    $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/libalice.a: $(LIB_OBJ)
	@rm -f $@
	@echo "  AR    $@"
	@ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cuda/%.o: cuda/%.cu
	@mkdir -p $(dir $@)
	@echo "  NVCC  $<"
	@$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

cuda-objs: $(CU_OBJ)

# The kernel profiler's library (variables above; nothing else links it).
.PHONY: kernel-profile
kernel-profile: $(KERNEL_PROFILE_SO)
$(KERNEL_PROFILE_SO): cuda/profiler/kernel_profile.cpp src/perf/kernel_summary.c src/perf/kernel_summary.h
	@if [ -z "$(CUPTI_FOUND)" ]; then \
	  echo "kernel-profile: CUPTI not found (CUPTI_HOME='$(CUPTI_HOME)'; searched cupti.h in '$(CUDA_HOME)/include' or '$(CUDA_HOME)/extras/CUPTI/include', libcupti.so in '$(CUDA_LIBDIR)', '$(CUDA_HOME)/lib64' or '$(CUDA_HOME)/extras/CUPTI/lib64'): set CUPTI_HOME=<dir with include/cupti.h> (and CUPTI_LIBDIR)" >&2; exit 1; fi
	@mkdir -p $(BUILD)/lib $(BUILD)/profiler
	@echo "  CXX   $@"
	@$(PROFILER_CC) -std=c11 -O2 -g -fPIC -fvisibility=hidden -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc -c src/perf/kernel_summary.c -o $(BUILD)/profiler/kernel_summary.pic.o
	@$(CXX) -std=c++17 -O2 -g -fPIC -fvisibility=hidden -shared -Wall -Wextra -Werror -Isrc -I$(CUPTI_HOME)/include -I$(CUDA_HOME)/include \
	  -o $@ cuda/profiler/kernel_profile.cpp $(BUILD)/profiler/kernel_summary.pic.o $(CUPTI_LIB) \
	  -Wl,-rpath,$(CUPTI_LIBDIR) -Wl,--no-undefined -lpthread

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libalice.a tests/unit/test.h
	@mkdir -p $(dir $@)
	@echo "  CCLD  $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libalice.a $(LDLIBS)

$(BUILD)/tests/bench_%: tests/bench/bench_%.c $(BUILD)/libalice.a
	@mkdir -p $(dir $@)
	@echo "  CCLD  $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libalice.a $(LDLIBS)

# Test helper programs (dumps for the PyTorch parity scripts and the like).
$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libalice.a
	@mkdir -p $(dir $@)
	@echo "  CCLD  $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libalice.a $(LDLIBS)

deps:
	@bash scripts/deps.sh

tests-build: $(BIN)/alice $(TEST_BIN) $(TOOL_BIN)
.PHONY: tests-build
# CI with nvcc and CUPTI (no GPU needed) compiles the kernel profiler too.
tests-build: $(if $(and $(filter 1,$(USE_CUDA)),$(CUPTI_FOUND)),$(KERNEL_PROFILE_SO))

test: deps
	@$(MAKE) --no-print-directory -j$$(nproc) tests-build
	@BUILD=$(BUILD) BIN=$(BIN) bash tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(BIN)/alice $(BENCH_BIN)
	@BUILD=$(BUILD) BIN=$(BIN) bash tests/bench/run.sh

demo: deps
	@$(MAKE) --no-print-directory -j$$(nproc) $(BIN)/alice
	@BIN=$(BIN) bash scripts/demo.sh

clean:
	rm -rf $(BUILD) $(BIN)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
