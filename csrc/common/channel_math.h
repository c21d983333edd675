// The per-channel arithmetic of BatchNorm, written once for the host and the
// device: the Chan merge of (count, mean, M2), the batch mean and variance,
// the running-statistics update, invstd, the two-part mean, the grad-input
// coefficients and the parameter gradients. Values in, values out: loading
// and storing [C] vectors of a given dtype is each device's business
// (channel_steps.h, which builds the finalize steps on these, takes it as a
// parameter).
//
// The CPU finalize (csrc/cpu/bn_kernels_cpu.cpp), the CUDA finalize kernels
// (csrc/cuda/kernels/bn_finalize.cu), the CUDA reduce kernels and the CPU
// statistics kernels call these, so the devices agree to the last bit
// wherever their inputs do.
#pragma once

#if !defined(__CUDACC__)
#include <cmath>  // sqrt (nvcc declares the math functions itself)
#endif
#include <cstdint>

// nvcc compiles what both sides call for the host and the device; a plain
// C++ compiler (the CPU build, the CUDA-on-CPU emulation) sees plain code.
#if defined(__CUDACC__)
#define RESNET_FAST_HOST_DEVICE __host__ __device__
#define RESNET_FAST_INLINE __forceinline__
#else
#define RESNET_FAST_HOST_DEVICE
#define RESNET_FAST_INLINE inline
#endif

// Internal linkage on purpose: the CPU kernels are compiled once per ISA
// (csrc/cpu/kernels/capability_*.cpp, each with its own target pragma), and
// an inline function of external linkage would be one copy for all of them,
// whichever the linker keeps (possibly the AVX-512 one, on every machine).
#define RESNET_FAST_CHANNEL_FN static RESNET_FAST_INLINE RESNET_FAST_HOST_DEVICE

namespace resnet_fast {

// Running (count, mean, M2) of one channel; `Moments m{}` is empty. A plain
// aggregate (no member initializers): no constructor for the linker to share
// between the ISA builds either.
struct Moments {
  double count, mean, m2;
};

// Chan's parallel update: m absorbs a part of n_b values with mean mean_b
// and sum of squared deviations m2_b. Exact for an empty m (the part itself).
RESNET_FAST_CHANNEL_FN void merge_moments(Moments& m, double n_b, double mean_b, double m2_b) {
  if (n_b == 0) return;
  const double n = m.count + n_b;
  const double delta = mean_b - m.mean;
  m.mean += delta * (n_b / n);
  m.m2 += m2_b + delta * delta * (m.count * n_b / n);
  m.count = n;
}

// Mean and biased variance; both 0 for no values (an empty batch, as
// PyTorch's running statistics are then left alone and the output is empty).
RESNET_FAST_CHANNEL_FN void batch_mean_var(const Moments& m, double& mean, double& var) {
  mean = m.count > 0 ? m.mean : 0.0;
  var = m.count > 0 ? m.m2 / m.count : 0.0;
}

// running = (1 - momentum) * running + momentum * batch, the variance
// unbiased (count = N * H * W > 1), as torch.nn.functional.batch_norm.
RESNET_FAST_CHANNEL_FN double updated_running_mean(double running, double mean, double momentum) {
  return (1 - momentum) * running + momentum * mean;
}
RESNET_FAST_CHANNEL_FN double updated_running_var(double running, double var, double momentum,
                                                  int64_t count) {
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  return (1 - momentum) * running + momentum * var * unbias;
}

// 1 / sqrt(var + eps) in float64, rounded once to the acc type.
template <typename A>
RESNET_FAST_CHANNEL_FN A invstd_of(double var, double eps) {
  return static_cast<A>(1.0 / sqrt(var + eps));
}

// Rows kMeanHi..kShift of a coefficient table (kernel_params.h).
template <typename A>
struct ChannelAffine {
  A mean_hi, mean_lo, scale, shift;
};

// The two-part mean (CoefRow in kernel_params.h): mean_hi = acc(mean),
// mean_lo = acc(mean - mean_hi).
template <typename A>
RESNET_FAST_CHANNEL_FN void split_mean(double mean, A& mean_hi, A& mean_lo) {
  mean_hi = static_cast<A>(mean);
  mean_lo = static_cast<A>(mean - static_cast<double>(mean_hi));
}

// Rows kGradA..kGradD: dx = a * g + b * (x - mean) + d.
template <typename A>
struct GradInputCoefs {
  A a, b, d;
};

// Training: from the sums of g and g * (x - mean) over the batch times
// inv_n = 1 / count (or from the batch means, inv_n = 1). In eval the
// statistics are constants: dx = scale * g.
template <typename A>
RESNET_FAST_CHANNEL_FN GradInputCoefs<A> grad_input_coefs(const ChannelAffine<A>& k, A invstd,
                                                          A sum_g, A sum_gx, A inv_n) {
  GradInputCoefs<A> q;
  q.a = k.scale;
  q.b = -k.scale * invstd * invstd * sum_gx * inv_n;
  q.d = -k.scale * sum_g * inv_n;
  return q;
}
template <typename A>
RESNET_FAST_CHANNEL_FN GradInputCoefs<A> eval_grad_input_coefs(const ChannelAffine<A>& k) {
  GradInputCoefs<A> q;
  q.a = k.scale;
  q.b = A(0);
  q.d = A(0);
  return q;
}

// grad_weight = sum g * (x - mean) * invstd; grad_bias = sum g.
template <typename A>
RESNET_FAST_CHANNEL_FN A grad_weight_of(A sum_gx, A invstd) {
  return sum_gx * invstd;
}

}  // namespace resnet_fast
