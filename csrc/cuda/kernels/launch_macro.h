// The kernel launch of the host launchers, written once for two compilers:
//
//   RESNET_FAST_LAUNCH(grid, block, stream, kernel<T, V>)(args...);
//
// is exactly `kernel<T, V><<<grid, block, 0, stream>>>(args...)` under nvcc
// (so the device code, and the gate's register table, are those of the
// chevron launch), and a synchronous launch of the test-only CUDA-on-CPU
// emulation (csrc/cuda/emulation/) under a plain C++ compiler, which has no
// chevrons. The kernel comes last and variadic because a template kernel's
// name holds commas (kernel<T, V>) that the preprocessor would split.
// No dynamic shared memory: no kernel here uses any.
#pragma once

#include <cuda_runtime.h>  // the emulation's declares ::resnet_fast::emulation::launch

#if defined(__CUDACC__)
#define RESNET_FAST_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#else
// The name and the launching function only serve the emulation's messages.
#define RESNET_FAST_LAUNCH(grid, block, stream, ...)                                  \
  ::resnet_fast::emulation::launch(#__VA_ARGS__, __PRETTY_FUNCTION__, grid, block, stream, \
                                   __VA_ARGS__)
#endif
