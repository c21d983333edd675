// The device built-ins the kernels use: threadIdx/blockIdx/blockDim/gridDim,
// warpSize, __syncthreads, __shfl_xor_sync, atomicAdd and the explicitly
// rounded fma intrinsics. The barrier and the shuffle hand control to the
// block scheduler (emu_scheduler.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu_vector_types.h"

namespace resnet_fast::emulation::detail {

// Written by the scheduler before it resumes a thread's fiber; read by the
// kernels through the references below. Plain globals (not thread_local): a
// fiber must never see another OS thread's copy, and only one launch runs at
// a time. The scheduler's functions are opaque calls, so the compiler reloads
// threadIdx after a barrier rather than keep the previous thread's value.
inline uint3 g_thread_idx{0, 0, 0};
inline uint3 g_block_idx{0, 0, 0};
inline dim3 g_block_dim{1, 1, 1};
inline dim3 g_grid_dim{1, 1, 1};

// __syncthreads(): waits until every thread of the block that has not
// returned waits at a barrier; aborts if they wait at different call sites.
void barrier(const char* file, int line);

// One lane's part of a shuffle: posts `bits` (the lane's value, `size`
// bytes) and returns the bits of the source lane, once every lane of the warp
// named in `mask` has posted. Aborts on a source lane that has returned.
std::uint64_t shuffle_xor(const char* file, int line, unsigned mask, std::uint64_t bits,
                          unsigned size, int lane_mask, int width);

template <typename T>
T shfl_xor_sync(const char* file, int line, unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "__shfl_xor_sync: a type of at most 8 bytes, as in CUDA");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle_xor(file, line, mask, bits, sizeof(T), lane_mask, width);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace resnet_fast::emulation::detail

// The built-in variables, read-only as in CUDA.
inline const uint3& threadIdx = resnet_fast::emulation::detail::g_thread_idx;
inline const uint3& blockIdx = resnet_fast::emulation::detail::g_block_idx;
inline const dim3& blockDim = resnet_fast::emulation::detail::g_block_dim;
inline const dim3& gridDim = resnet_fast::emulation::detail::g_grid_dim;
constexpr int warpSize = 32;

// Macros so that each barrier and shuffle knows its call site: threads that
// wait at different sites are a bug (a divergent barrier) that the scheduler
// reports with both sites.
#define __syncthreads() ::resnet_fast::emulation::detail::barrier(__FILE__, __LINE__)
#define __shfl_xor_sync(...) \
  ::resnet_fast::emulation::detail::shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)

// Atomics: fibers switch only inside __syncthreads and shuffles, so a plain
// read-modify-write cannot be interleaved with another thread's. The
// overloads are CUDA's (no template: a call with a type CUDA lacks fails).
inline int atomicAdd(int* a, int v) { const int old = *a; *a = old + v; return old; }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) {
  const unsigned int old = *a;
  *a = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  const unsigned long long old = *a;
  *a = old + v;
  return old;
}
inline float atomicAdd(float* a, float v) { const float old = *a; *a = old + v; return old; }
inline double atomicAdd(double* a, double v) { const double old = *a; *a = old + v; return old; }

// A single rounding, as on the GPU (libm's fma is correctly rounded in
// software where the CPU has no FMA instruction).
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
