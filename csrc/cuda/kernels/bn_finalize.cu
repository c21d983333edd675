// The [C]-sized steps between the streaming kernels: merging the per-block
// partial results, the running-statistics update, the per-channel
// coefficients of the apply kernels, and the parameter gradients.
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
  const A invstd = static_cast<A>(1.0 / sqrt(var + p.eps));
  p.save_mean[c] = mean;
  static_cast<A*>(p.save_invstd)[c] = invstd;
  const ChannelAffine<A> k = channel_affine<A>(mean, invstd, p.weight, p.bias, c);
  A* coefs = static_cast<A*>(p.coefs);
  coefs[0 * p.C + c] = k.mean_hi;
  coefs[1 * p.C + c] = k.mean_lo;
  coefs[2 * p.C + c] = k.scale;
  coefs[3 * p.C + c] = k.shift;
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
  const A invstd = static_cast<const A*>(p.saved.save_invstd)[c];
  const ChannelAffine<A> k =
      channel_affine<A>(p.saved.save_mean[c], invstd, p.saved.weight, p.saved.bias, c);
  store_channel(p.grad_weight, p.grad_weight_dtype, 1, c, static_cast<double>(sum_gx * invstd));
  store_channel(p.grad_bias, p.grad_bias_dtype, 1, c, static_cast<double>(sum_g));

  A b = A(0), d = A(0);
  if (p.training) {
    const A inv_n = A(1) / static_cast<A>(p.count);
    b = -k.scale * invstd * invstd * sum_gx * inv_n;
    d = -k.scale * sum_g * inv_n;
  }
  A* coefs = static_cast<A*>(p.coefs);
  coefs[0 * p.C + c] = k.mean_hi;
  coefs[1 * p.C + c] = k.mean_lo;
  coefs[2 * p.C + c] = k.scale;
  coefs[3 * p.C + c] = k.shift;
  coefs[4 * p.C + c] = k.scale;  // a
  coefs[5 * p.C + c] = b;
  coefs[6 * p.C + c] = d;
}

unsigned finalize_blocks(int64_t C) {
  return static_cast<unsigned>(ceil_div(C, kWarpsPerBlock));
}

}  // namespace

cudaError_t launch_bn_finalize_forward(const FinalizeForwardParams& p, cudaStream_t stream) {
  if (p.C == 0) return cudaSuccess;
  if (ceil_div(p.C, kWarpsPerBlock) > INT32_MAX) return cudaErrorInvalidConfiguration;
  const unsigned blocks = finalize_blocks(p.C), threads = kWarpsPerBlock * 32;
  if (p.acc_double) {
    bn_finalize_forward_kernel<double><<<blocks, threads, 0, stream>>>(p);
  } else {
    bn_finalize_forward_kernel<float><<<blocks, threads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

cudaError_t launch_bn_finalize_backward(const FinalizeBackwardParams& p, cudaStream_t stream) {
  if (p.C == 0) return cudaSuccess;
  if (ceil_div(p.C, kWarpsPerBlock) > INT32_MAX) return cudaErrorInvalidConfiguration;
  const unsigned blocks = finalize_blocks(p.C), threads = kWarpsPerBlock * 32;
  if (p.acc_double) {
    bn_finalize_backward_kernel<double><<<blocks, threads, 0, stream>>>(p);
  } else {
    bn_finalize_backward_kernel<float><<<blocks, threads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace resnet_fast::cuda
