/*
 * emu.h - what the CUDA emulator's files share (docs/cuda-emulator.md):
 * the registry of device memory (runtime.cpp) that launches, copies,
 * GEMMs and NCCL collectives check pointers against, the default stream's
 * queue, and the per-host-thread last error.
 */
#ifndef FACET_EMU_EMU_H
#define FACET_EMU_EMU_H

#include "cuda_runtime.h"
#include <string>

namespace facet_emu {

/* 1 when [p, p + n) lies inside one cudaMalloc block (n = 0: p inside or at its end) */
int device_range(const void *p, size_t n);
/* queues work on the emulated default stream (run: 0, or 1 after a fault) */
void enqueue(std::function<int(void)> run);
/* sets the calling thread's last error, with a detail that cudaGetErrorString adds */
void set_error(cudaError_t e, const char *detail);
/* A fault in device work: the context is lost, as a GPU's after an illegal
 * address or a launch failure. Every later call that needs the device
 * returns e (and cudaGetLastError keeps returning it); queued work is
 * dropped. Also the calling thread's last error. */
void lose_context(cudaError_t e, const char *why);
/* For the emulator's own tests only: a fresh context, as a new process has
 * (a GPU's lost context never comes back). Device memory stays allocated. */
void reset_context(void);
/* how many OS threads run the blocks of a launch, the launching one included
 * (launch.cpp); n <= 0: FACET_EMU_THREADS again (default: the online CPUs) */
void set_threads(int n);
/* the order the threads of a block start and resume in (launch.cpp): 0 thread
 * order, 1 reverse, -1 FACET_EMU_ORDER again (reverse, or else thread order) */
void set_order(int rev);
/* the GPU of this process (runtime.cpp): the first entry of
 * CUDA_VISIBLE_DEVICES when CUDA started (then fixed, as on a GPU), "0" unset */
std::string process_device(void);

}   /* namespace facet_emu */

#endif
