// The [C]-sized steps between the streaming kernels: merging the per-block
// partial results, then the per-channel steps of common/channel_steps.h (the
// running-statistics update, the coefficient tables of the apply kernels,
// the parameter gradients), which the CPU finalize runs too.
//
// Passes over memory: none over activations; reads splits * C partials
// (kilobytes) and writes a few [C] vectors. One warp per channel: its lanes
// merge the partials in parallel, then a butterfly of shuffles.
#include <cstdint>

#include "device_common.cuh"
#include "launch.h"

namespace resnet_fast::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ int64_t warp_channel() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
}

template <typename A>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    bn_finalize_forward_kernel(FinalizeForwardParams p) {
  const int64_t c = warp_channel();
  const unsigned lane = threadIdx.x % 32;
  if (c >= p.C) return;  // the whole warp: no shuffle below is left half-full

  double mean, var;
  if (p.training) {
    Moments m{};
    merge_partials(m, p, c, lane, 32);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const double nb = __shfl_xor_sync(0xffffffffu, m.count, off);
      const double mb = __shfl_xor_sync(0xffffffffu, m.mean, off);
      const double m2b = __shfl_xor_sync(0xffffffffu, m.m2, off);
      merge_moments(m, nb, mb, m2b);
    }
    batch_mean_var(m, mean, var);
  } else {
    running_mean_var<DeviceChannelIo>(p, c, mean, var);
  }
  if (lane != 0) return;
  finalize_forward_channel<A, DeviceChannelIo>(p, c, mean, var);
}

template <typename A>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    bn_finalize_backward_kernel(FinalizeBackwardParams p) {
  const int64_t c = warp_channel();
  const unsigned lane = threadIdx.x % 32;
  if (c >= p.C) return;

  double sg = 0, sgx = 0;
  sum_partials(p, c, lane, 32, sg, sgx);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    sg += __shfl_xor_sync(0xffffffffu, sg, off);
    sgx += __shfl_xor_sync(0xffffffffu, sgx, off);
  }
  if (lane != 0) return;
  finalize_backward_channel<A, DeviceChannelIo>(p, c, sg, sgx);
}

// One thread per channel: a handful of loads and stores each.
template <typename A>
__global__ void bn_given_coefs_kernel(GivenCoefsParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.C) return;
  given_coefs_channel<A, DeviceChannelIo>(p, c);
}

unsigned finalize_blocks(int64_t C) {
  return static_cast<unsigned>(ceil_div(C, kWarpsPerBlock));
}

}  // namespace

cudaError_t launch_bn_given_coefs(const GivenCoefsParams& p, cudaStream_t stream) {
  if (p.C == 0) return cudaSuccess;
  constexpr unsigned threads = 256;
  if (ceil_div(p.C, threads) > INT32_MAX) return cudaErrorInvalidConfiguration;
  const unsigned blocks = static_cast<unsigned>(ceil_div(p.C, threads));
  if (p.acc_double) {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_given_coefs_kernel<double>)(p);
  } else {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_given_coefs_kernel<float>)(p);
  }
  return cudaGetLastError();
}

cudaError_t launch_bn_finalize_forward(const FinalizeForwardParams& p, cudaStream_t stream) {
  if (p.C == 0) return cudaSuccess;
  if (ceil_div(p.C, kWarpsPerBlock) > INT32_MAX) return cudaErrorInvalidConfiguration;
  const unsigned blocks = finalize_blocks(p.C), threads = kWarpsPerBlock * 32;
  if (p.acc_double) {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_finalize_forward_kernel<double>)(p);
  } else {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_finalize_forward_kernel<float>)(p);
  }
  return cudaGetLastError();
}

cudaError_t launch_bn_finalize_backward(const FinalizeBackwardParams& p, cudaStream_t stream) {
  if (p.C == 0) return cudaSuccess;
  if (ceil_div(p.C, kWarpsPerBlock) > INT32_MAX) return cudaErrorInvalidConfiguration;
  const unsigned blocks = finalize_blocks(p.C), threads = kWarpsPerBlock * 32;
  if (p.acc_double) {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_finalize_backward_kernel<double>)(p);
  } else {
    RESNET_FAST_LAUNCH(blocks, threads, stream, bn_finalize_backward_kernel<float>)(p);
  }
  return cudaGetLastError();
}

}  // namespace resnet_fast::cuda
