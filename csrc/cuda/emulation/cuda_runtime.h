// cuda_runtime.h of the CUDA-on-CPU emulation (test-only, see README.md):
// with -I csrc/cuda/emulation a plain C++ compiler builds the kernel files of
// csrc/cuda/kernels/ unchanged and runs their launches on the CPU.
#pragma once

#if defined(__CUDACC__)
#error "csrc/cuda/emulation is for a plain C++ compiler; nvcc uses the real CUDA headers"
#endif

#define RESNET_FAST_CUDA_EMULATION 1

// The kernels' `#pragma unroll` is nvcc's: compile them with
// -Wno-unknown-pragmas under -Wall (g++ 12 ignores a `#pragma GCC diagnostic`
// for that warning, GCC bug 53431).

// CUDA's math functions are overloaded for float in the global namespace
// (fma(float, float, float) is fmaf, not fma on doubles): libstdc++'s
// <math.h> brings std's overloads there likewise.
#include <math.h>

#include "emu_builtins.h"
#include "emu_launch.h"
#include "emu_qualifiers.h"
#include "emu_runtime_api.h"
#include "emu_vector_types.h"
