// The per-channel steps of the finalize kernels, over the params structs of
// kernel_params.h, written once for every device: merging the partial
// results of a reduction, the running-statistics update, the coefficient
// tables of the apply kernels, the parameter gradients. The arithmetic is
// channel_math.h's.
//
// Each step is templated on the acc type A (float, double for double inputs)
// and on the device's access to [C] vectors of any dtype, Io:
//   static double load(const void* data, Dtype dtype, int64_t stride, int64_t i);
//   static void store(void* data, Dtype dtype, int64_t stride, int64_t i, double v);
// (values converted through double: exact for every dtype but double, which
// is rounded once; see DeviceChannelIo in csrc/cuda/kernels/device_common.cuh
// and HostChannelIo in csrc/cpu/bn_kernels_cpu.cpp). The CUDA finalize
// kernels run them one channel per warp, the CPU finalize in a loop over C.
#pragma once

#include <cstdint>

#include "channel_math.h"
#include "kernel_params.h"

namespace resnet_fast {

// Partial result s of channel c in row `row` of a [rows][splits][C] array.
RESNET_FAST_CHANNEL_FN int64_t partial_index(int row, int splits, int64_t C, int64_t s,
                                             int64_t c) {
  return (row * static_cast<int64_t>(splits) + s) * C + c;
}

// Merges the statistics partials s = first, first + step, ... (< splits) of
// channel c, [3][splits][C] (count, mean, M2), into m. The CUDA finalize
// gives each lane of a warp its own `first` and merges the lanes after; the
// CPU takes them all (first 0, step 1).
RESNET_FAST_CHANNEL_FN void merge_partials(Moments& m, const FinalizeForwardParams& p, int64_t c,
                                           int64_t first, int64_t step) {
  for (int64_t s = first; s < p.splits; s += step) {
    merge_moments(m, p.partials[partial_index(0, p.splits, p.C, s, c)],
                  p.partials[partial_index(1, p.splits, p.C, s, c)],
                  p.partials[partial_index(2, p.splits, p.C, s, c)]);
  }
}

// Sums the backward partials s = first, first + step, ... of channel c,
// [2][splits][C] (sum_g, sum_gx), into sum_g, sum_gx.
RESNET_FAST_CHANNEL_FN void sum_partials(const FinalizeBackwardParams& p, int64_t c, int64_t first,
                                         int64_t step, double& sum_g, double& sum_gx) {
  for (int64_t s = first; s < p.splits; s += step) {
    sum_g += p.partials[partial_index(0, p.splits, p.C, s, c)];
    sum_gx += p.partials[partial_index(1, p.splits, p.C, s, c)];
  }
}

// A channel parameter converted to the acc type the way ATen's .to(acc)
// does: one rounding from the stored dtype.
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN A load_param(const ChannelVector& v, int64_t c) {
  return static_cast<A>(Io::load(v.data, v.dtype, v.stride, c));
}

// The apply coefficients of channel c from the float64 mean and invstd:
// the two-part mean, scale = weight * invstd (invstd without weight), shift
// = bias or 0.
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN ChannelAffine<A> affine_of(double mean, A invstd,
                                                  const ChannelVector& weight,
                                                  const ChannelVector& bias, int64_t c) {
  ChannelAffine<A> k;
  split_mean<A>(mean, k.mean_hi, k.mean_lo);
  k.scale = weight.data != nullptr ? load_param<A, Io>(weight, c) * invstd : invstd;
  k.shift = bias.data != nullptr ? load_param<A, Io>(bias, c) : A(0);
  return k;
}

// The forward's coefficients of channel c, recomputed from what it returned:
// bit-identical to the forward's, so the backward's ReLU mask is too.
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN ChannelAffine<A> saved_affine(const SavedStats& s, int64_t c) {
  const A invstd = static_cast<const A*>(s.save_invstd)[c];
  return affine_of<A, Io>(s.save_mean[c], invstd, s.weight, s.bias, c);
}

template <typename A>
RESNET_FAST_CHANNEL_FN void store_affine(void* coefs_, int64_t C, int64_t c,
                                         const ChannelAffine<A>& k) {
  A* coefs = static_cast<A*>(coefs_);
  coefs[kMeanHi * C + c] = k.mean_hi;
  coefs[kMeanLo * C + c] = k.mean_lo;
  coefs[kScale * C + c] = k.scale;
  coefs[kShift * C + c] = k.shift;
}

template <typename A>
RESNET_FAST_CHANNEL_FN void store_grad_input(void* coefs_, int64_t C, int64_t c,
                                             const GradInputCoefs<A>& q) {
  A* coefs = static_cast<A*>(coefs_);
  coefs[kGradA * C + c] = q.a;
  coefs[kGradB * C + c] = q.b;
  coefs[kGradD * C + c] = q.d;
}

// The running statistics of channel c, the eval forward's mean and var.
template <typename Io>
RESNET_FAST_CHANNEL_FN void running_mean_var(const FinalizeForwardParams& p, int64_t c,
                                             double& mean, double& var) {
  const MutableChannelVector& rm = p.running_mean;
  const MutableChannelVector& rv = p.running_var;
  mean = Io::load(rm.data, rm.dtype, rm.stride, c);
  var = Io::load(rv.data, rv.dtype, rv.stride, c);
}

// The forward finalize of channel c (FinalizeForwardParams) from its mean and
// biased variance: the batch's (batch_mean_var of the merged partials) in
// training, running_mean_var in eval.
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN void finalize_forward_channel(const FinalizeForwardParams& p, int64_t c,
                                                     double mean, double var) {
  if (p.training && p.count > 0 && p.running_mean.data != nullptr) {
    const MutableChannelVector& rm = p.running_mean;
    const MutableChannelVector& rv = p.running_var;
    const double old_mean = Io::load(rm.data, rm.dtype, rm.stride, c);
    const double old_var = Io::load(rv.data, rv.dtype, rv.stride, c);
    Io::store(rm.data, rm.dtype, rm.stride, c, updated_running_mean(old_mean, mean, p.momentum));
    Io::store(rv.data, rv.dtype, rv.stride, c,
              updated_running_var(old_var, var, p.momentum, p.count));
  }
  p.save_mean[c] = mean;
  if (p.batch_var != nullptr) p.batch_var[c] = var;
  if (p.save_invstd == nullptr) return;  // the statistics alone
  const A invstd = invstd_of<A>(var, p.eps);
  static_cast<A*>(p.save_invstd)[c] = invstd;
  store_affine<A>(p.coefs, p.C, c, affine_of<A, Io>(mean, invstd, p.weight, p.bias, c));
}

// The backward finalize of channel c (FinalizeBackwardParams), given the
// summed partials.
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN void finalize_backward_channel(const FinalizeBackwardParams& p, int64_t c,
                                                      double sg, double sgx) {
  const A sum_g = static_cast<A>(sg), sum_gx = static_cast<A>(sgx);
  if (p.sum_g != nullptr) {  // the sums alone
    static_cast<A*>(p.sum_g)[c] = sum_g;
    static_cast<A*>(p.sum_gx)[c] = sum_gx;
    return;
  }
  const A invstd = static_cast<const A*>(p.saved.save_invstd)[c];
  const ChannelAffine<A> k = saved_affine<A, Io>(p.saved, c);
  Io::store(p.grad_weight, p.grad_weight_dtype, 1, c,
            static_cast<double>(grad_weight_of(sum_gx, invstd)));
  Io::store(p.grad_bias, p.grad_bias_dtype, 1, c, static_cast<double>(sum_g));
  store_affine<A>(p.coefs, p.C, c, k);
  store_grad_input<A>(p.coefs, p.C, c,
                      p.training ? grad_input_coefs<A>(k, invstd, sum_g, sum_gx,
                                                       A(1) / static_cast<A>(p.count))
                                 : eval_grad_input_coefs<A>(k));
}

// The coefficients of channel c from given statistics (GivenCoefsParams).
template <typename A, typename Io>
RESNET_FAST_CHANNEL_FN void given_coefs_channel(const GivenCoefsParams& p, int64_t c) {
  const A invstd = static_cast<const A*>(p.saved.save_invstd)[c];
  const ChannelAffine<A> k = saved_affine<A, Io>(p.saved, c);
  store_affine<A>(p.coefs, p.C, c, k);
  if (p.mean_g == nullptr) return;
  store_grad_input<A>(p.coefs, p.C, c,
                      grad_input_coefs<A>(k, invstd, static_cast<const A*>(p.mean_g)[c],
                                          static_cast<const A*>(p.mean_gx)[c], A(1)));
}

}  // namespace resnet_fast
