// The CPU kernel table (common/bn_kernels.h). The passes over activations
// are the per-ISA kernels of kernels/kernels_impl.h (the build isa_choice.cpp
// picks), with one split per reduction: their threads merge their own parts.
// The finalize steps are loops over the channels running
// common/channel_steps.h, the steps that the CUDA finalize kernels run one
// channel per warp, so both devices compute the [C]-sized results alike.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <vector>

#include "../common/bn_kernels.h"
#include "../common/channel_steps.h"
#include "isa_choice.h"

namespace resnet_fast::cpu {
namespace {

// [C] vectors of any dtype for the per-channel steps, through double.
struct HostChannelIo {
  static double load(const void* data, Dtype dtype, int64_t stride, int64_t i) {
    const int64_t k = i * stride;
    switch (dtype) {
      case Dtype::kDouble: return static_cast<const double*>(data)[k];
      case Dtype::kHalf: return static_cast<float>(static_cast<const c10::Half*>(data)[k]);
      case Dtype::kBFloat16: return static_cast<float>(static_cast<const c10::BFloat16*>(data)[k]);
      case Dtype::kFloat: break;
    }
    return static_cast<const float*>(data)[k];
  }

  // c10's half and bfloat16 convert from float: a double is rounded to float
  // first (the CUDA store rounds once, from the double; the two differ only
  // where the float lands exactly halfway between two half values).
  static void store(void* data, Dtype dtype, int64_t stride, int64_t i, double v) {
    const int64_t k = i * stride;
    switch (dtype) {
      case Dtype::kDouble: static_cast<double*>(data)[k] = v; return;
      case Dtype::kHalf:
        static_cast<c10::Half*>(data)[k] = c10::Half(static_cast<float>(v));
        return;
      case Dtype::kBFloat16:
        static_cast<c10::BFloat16*>(data)[k] = c10::BFloat16(static_cast<float>(v));
        return;
      case Dtype::kFloat: break;
    }
    static_cast<float*>(data)[k] = static_cast<float>(v);
  }
};

// Calls f(A{}) with A the acc type: double for double inputs, else float.
template <typename F>
void with_acc(bool acc_double, F&& f) {
  if (acc_double) {
    f(double{});
  } else {
    f(float{});
  }
}

// The rows of a [rows][C] coefficient table of `acc_size`-byte elements.
const void* row_of(const void* coefs, int row, int64_t C, size_t acc_size) {
  return static_cast<const char*>(coefs) + row * C * static_cast<int64_t>(acc_size);
}

AffineRows affine_rows(const void* coefs, int64_t C, size_t acc_size) {
  return {row_of(coefs, kMeanHi, C, acc_size), row_of(coefs, kMeanLo, C, acc_size),
          row_of(coefs, kScale, C, acc_size), row_of(coefs, kShift, C, acc_size)};
}

// The grad-input's a is the forward's scale (grad_input_coefs and
// eval_grad_input_coefs in common/channel_math.h): the kernels read it from
// the scale row, one stream fewer over the channels in the channels_last
// walk, where the [C] rows are re-read for every row of the input (10% of
// the 2048-channel grad-input's time with a seventh row).
GradRows grad_rows(const void* coefs, int64_t C, size_t acc_size) {
  const AffineRows affine = affine_rows(coefs, C, acc_size);
  return {affine, affine.scale, row_of(coefs, kGradB, C, acc_size),
          row_of(coefs, kGradD, C, acc_size)};
}

size_t acc_size(Dtype dtype) { return dtype == Dtype::kDouble ? sizeof(double) : sizeof(float); }

// One split per channel whenever there is something to reduce.
ReductionPlan one_split(const Geometry& g) {
  ReductionPlan plan;
  plan.splits = g.C > 0 && g.N * g.H * g.W > 0 ? 1 : 0;
  return plan;
}

KernelError check_plan(const ReductionPlan& plan) {
  return plan.splits == 1 ? nullptr : "the CPU reductions run plans of one split (plan_* above)";
}

bool empty(const Geometry& g) { return g.N * g.C * g.H * g.W == 0; }

ReductionPlan plan_stats(const StatsParams& p) { return one_split(p.g); }

KernelError stats(const StatsParams& p, const ReductionPlan& plan) {
  if (plan.splits == 0) return nullptr;
  if (KernelError error = check_plan(plan)) return error;
  isa_kernels().bn_stats(p);
  return nullptr;
}

KernelError finalize_forward(const FinalizeForwardParams& p) {
  with_acc(p.acc_double, [&](auto zero) {
    using A = decltype(zero);
    for (int64_t c = 0; c < p.C; ++c) {
      double mean, var;
      if (p.training) {
        // One split (the CPU's plans): the partial is the channel's moments,
        // what merging it into nothing gives exactly, without the divisions.
        Moments m{};
        if (p.splits == 1) {
          m = {p.partials[c], p.partials[p.C + c], p.partials[2 * p.C + c]};
        } else {
          merge_partials(m, p, c, 0, 1);
        }
        batch_mean_var(m, mean, var);
      } else {
        running_mean_var<HostChannelIo>(p, c, mean, var);
      }
      finalize_forward_channel<A, HostChannelIo>(p, c, mean, var);
    }
  });
  return nullptr;
}

KernelError apply(const ApplyParams& p) {
  if (!empty(p.g)) isa_kernels().bn_apply(p, affine_rows(p.coefs, p.g.C, acc_size(p.g.dtype)));
  return nullptr;
}

ReductionPlan plan_backward_reduce(const BackwardReduceParams& p) { return one_split(p.g); }

KernelError backward_reduce(const BackwardReduceParams& p, const ReductionPlan& plan) {
  if (plan.splits == 0) return nullptr;
  if (KernelError error = check_plan(plan)) return error;
  // The forward's coefficients, once per call (the CUDA kernels recompute
  // them per block from p.saved).
  with_acc(p.g.dtype == Dtype::kDouble, [&](auto zero) {
    using A = decltype(zero);
    std::vector<A> coefs(static_cast<size_t>(kApplyCoefRows * p.g.C));
    for (int64_t c = 0; c < p.g.C; ++c)
      store_affine<A>(coefs.data(), p.g.C, c, saved_affine<A, HostChannelIo>(p.saved, c));
    isa_kernels().bn_backward_reduce(p, affine_rows(coefs.data(), p.g.C, sizeof(A)));
  });
  return nullptr;
}

KernelError finalize_backward(const FinalizeBackwardParams& p) {
  with_acc(p.acc_double, [&](auto zero) {
    using A = decltype(zero);
    for (int64_t c = 0; c < p.C; ++c) {
      double sum_g = 0, sum_gx = 0;
      sum_partials(p, c, 0, 1, sum_g, sum_gx);
      finalize_backward_channel<A, HostChannelIo>(p, c, sum_g, sum_gx);
    }
  });
  return nullptr;
}

KernelError backward_apply(const BackwardApplyParams& p) {
  if (!empty(p.g)) {
    isa_kernels().bn_backward_apply(p, grad_rows(p.coefs, p.g.C, acc_size(p.g.dtype)));
  }
  return nullptr;
}

KernelError given_coefs(const GivenCoefsParams& p) {
  with_acc(p.acc_double, [&](auto zero) {
    using A = decltype(zero);
    for (int64_t c = 0; c < p.C; ++c) given_coefs_channel<A, HostChannelIo>(p, c);
  });
  return nullptr;
}

KernelError add_relu(const AddReluParams& p) {
  if (p.numel > 0) isa_kernels().add_relu(p);
  return nullptr;
}

KernelError relu_backward(const ReluBackwardParams& p) {
  if (p.numel > 0) isa_kernels().relu_backward(p);
  return nullptr;
}

const BnKernels kTable{"cpu",
                       plan_stats,
                       stats,
                       finalize_forward,
                       apply,
                       plan_backward_reduce,
                       backward_reduce,
                       finalize_backward,
                       backward_apply,
                       given_coefs,
                       add_relu,
                       relu_backward};

}  // namespace

const BnKernels& bn_kernels() { return kTable; }

}  // namespace resnet_fast::cpu
