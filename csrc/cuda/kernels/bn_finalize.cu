// The [C]-sized steps between the streaming kernels: merging the per-block
// partial results, the running-statistics update, the per-channel
// coefficients of the apply kernels (from merged or from given statistics),
// and the parameter gradients.
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

// Rows 0-3 of a coefficient table: what ApplyParams reads, and the first
// rows of BackwardApplyParams'.
template <typename A>
__device__ __forceinline__ void store_affine(void* coefs_, int64_t C, int64_t c,
                                             const ChannelAffine<A>& k) {
  A* coefs = static_cast<A*>(coefs_);
  coefs[0 * C + c] = k.mean_hi;
  coefs[1 * C + c] = k.mean_lo;
  coefs[2 * C + c] = k.scale;
  coefs[3 * C + c] = k.shift;
}

// Rows 4-6: dx = a * g + b * (x - mean) + d, from the sums of g and
// g * (x - mean) over the batch times inv_n = 1 / count (the CPU kernels'
// order of operations; means given: inv_n = 1).
template <typename A>
__device__ __forceinline__ void store_grad_input(void* coefs_, int64_t C, int64_t c,
                                                 const ChannelAffine<A>& k, A invstd, A sum_g,
                                                 A sum_gx, A inv_n) {
  A* coefs = static_cast<A*>(coefs_);
  coefs[4 * C + c] = k.scale;  // a
  coefs[5 * C + c] = -k.scale * invstd * invstd * sum_gx * inv_n;
  coefs[6 * C + c] = -k.scale * sum_g * inv_n;
}

template <typename A>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    bn_finalize_forward_kernel(FinalizeForwardParams p) {
  const int64_t c = warp_channel();
  const unsigned lane = threadIdx.x % 32;
  if (c >= p.C) return;  // the whole warp: no shuffle below is left half-full

  double mean, var;
  if (p.training) {
    Moments m;
    for (int64_t s = lane; s < p.splits; s += 32) {
      m.merge(p.partials[(0 * static_cast<int64_t>(p.splits) + s) * p.C + c],
              p.partials[(1 * static_cast<int64_t>(p.splits) + s) * p.C + c],
              p.partials[(2 * static_cast<int64_t>(p.splits) + s) * p.C + c]);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const double nb = __shfl_xor_sync(0xffffffffu, m.n, off);
      const double mb = __shfl_xor_sync(0xffffffffu, m.mean, off);
      const double m2b = __shfl_xor_sync(0xffffffffu, m.m2, off);
      m.merge(nb, mb, m2b);
    }
    mean = m.n > 0 ? m.mean : 0.0;  // an empty batch: 0, as the CPU kernels
    var = m.n > 0 ? m.m2 / m.n : 0.0;
  } else {
    const MutableChannelVector& rm = p.running_mean;
    const MutableChannelVector& rv = p.running_var;
    mean = load_channel(rm.data, rm.dtype, rm.stride, c);
    var = load_channel(rv.data, rv.dtype, rv.stride, c);
  }
  if (lane != 0) return;

  if (p.training && p.count > 0 && p.running_mean.data != nullptr) {
    const MutableChannelVector& rm = p.running_mean;
    const MutableChannelVector& rv = p.running_var;
    const double unbias = static_cast<double>(p.count) / static_cast<double>(p.count - 1);
    const double old_mean = load_channel(rm.data, rm.dtype, rm.stride, c);
    const double old_var = load_channel(rv.data, rv.dtype, rv.stride, c);
    store_channel(rm.data, rm.dtype, rm.stride, c, (1 - p.momentum) * old_mean + p.momentum * mean);
    store_channel(rv.data, rv.dtype, rv.stride, c,
                  (1 - p.momentum) * old_var + p.momentum * var * unbias);
  }
  p.save_mean[c] = mean;
  if (p.batch_var != nullptr) p.batch_var[c] = var;
  if (p.save_invstd == nullptr) return;  // the statistics alone
  const A invstd = static_cast<A>(1.0 / sqrt(var + p.eps));
  static_cast<A*>(p.save_invstd)[c] = invstd;
  store_affine<A>(p.coefs, p.C, c, channel_affine<A>(mean, invstd, p.weight, p.bias, c));
}

template <typename A>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    bn_finalize_backward_kernel(FinalizeBackwardParams p) {
  const int64_t c = warp_channel();
  const unsigned lane = threadIdx.x % 32;
  if (c >= p.C) return;

  double sg = 0, sgx = 0;
  for (int64_t s = lane; s < p.splits; s += 32) {
    sg += p.partials[(0 * static_cast<int64_t>(p.splits) + s) * p.C + c];
    sgx += p.partials[(1 * static_cast<int64_t>(p.splits) + s) * p.C + c];
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    sg += __shfl_xor_sync(0xffffffffu, sg, off);
    sgx += __shfl_xor_sync(0xffffffffu, sgx, off);
  }
  if (lane != 0) return;

  const A sum_g = static_cast<A>(sg), sum_gx = static_cast<A>(sgx);
  if (p.sum_g != nullptr) {  // the sums alone
    static_cast<A*>(p.sum_g)[c] = sum_g;
    static_cast<A*>(p.sum_gx)[c] = sum_gx;
    return;
  }
  const A invstd = static_cast<const A*>(p.saved.save_invstd)[c];
  const ChannelAffine<A> k =
      channel_affine<A>(p.saved.save_mean[c], invstd, p.saved.weight, p.saved.bias, c);
  store_channel(p.grad_weight, p.grad_weight_dtype, 1, c, static_cast<double>(sum_gx * invstd));
  store_channel(p.grad_bias, p.grad_bias_dtype, 1, c, static_cast<double>(sum_g));

  store_affine<A>(p.coefs, p.C, c, k);
  if (p.training) {
    store_grad_input<A>(p.coefs, p.C, c, k, invstd, sum_g, sum_gx,
                        A(1) / static_cast<A>(p.count));
  } else {  // dx = scale * g
    A* coefs = static_cast<A*>(p.coefs);
    coefs[4 * p.C + c] = k.scale;
    coefs[5 * p.C + c] = A(0);
    coefs[6 * p.C + c] = A(0);
  }
}

// One thread per channel: a handful of loads and stores each.
template <typename A>
__global__ void bn_given_coefs_kernel(GivenCoefsParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.C) return;
  const A invstd = static_cast<const A*>(p.saved.save_invstd)[c];
  const ChannelAffine<A> k =
      channel_affine<A>(p.saved.save_mean[c], invstd, p.saved.weight, p.saved.bias, c);
  store_affine<A>(p.coefs, p.C, c, k);
  if (p.mean_g == nullptr) return;
  store_grad_input<A>(p.coefs, p.C, c, k, invstd, static_cast<const A*>(p.mean_g)[c],
                      static_cast<const A*>(p.mean_gx)[c], A(1));
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
