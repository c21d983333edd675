// CUDA's function and variable qualifiers as plain C++, for the CUDA-on-CPU
// emulation (test-only; see README.md). Every function runs on the host, so
// the execution-space qualifiers say nothing; the launch bounds only guide
// ptxas.
#pragma once

#define __global__
#define __device__
#define __host__
// `inline`, not always_inline: the attribute only lengthens the compile of the
// kernel files through the shim and changes nothing that a test can see.
#define __forceinline__ inline
#define __launch_bounds__(...)

// One object per block, shared by the block's threads. The emulation runs a
// block's threads as fibers on the launching OS thread and the blocks one
// after another (launches are serialized by a process-wide lock), so a
// function-local static is exactly that: a kernel's static belongs to the
// kernel, each template instantiation has its own (a distinct kernel in CUDA
// too), and one in an inline __device__ helper is one per process, which is
// also right because only one block runs at a time.
// Unlike CUDA, the contents carry over from the previous block (and are zero
// in the first): a kernel that reads shared memory it did not write in the
// same block is not caught.
// Dynamic shared memory (`extern __shared__ T buf[];`) does not compile:
// `static extern` is ill-formed, which is the wanted diagnostic.
#define __shared__ static
