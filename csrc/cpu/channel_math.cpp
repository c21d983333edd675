#include "channel_math.h"

#include <cmath>

namespace resnet_fast::cpu {
namespace {

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// t as a contiguous tensor of `dtype`: no copy in the common case.
at::Tensor as_acc(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype && t.is_contiguous() ? t : t.to(dtype).contiguous();
}

template <typename F>
void for_acc(at::ScalarType acc, F&& f) {
  if (acc == at::kDouble) {
    f(double{});
  } else {
    f(float{});
  }
}

}  // namespace

at::Tensor invstd_from_var(const at::Tensor& var, double eps, at::ScalarType acc) {
  at::Tensor invstd = at::empty(var.sizes(), var.options().dtype(acc));
  const double* v = var.const_data_ptr<double>();
  for_acc(acc, [&](auto zero) {
    using acc_t = decltype(zero);
    acc_t* out = invstd.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < var.numel(); ++c) out[c] = static_cast<acc_t>(1.0 / std::sqrt(v[c] + eps));
  });
  return invstd;
}

ChannelAffine channel_affine(const at::Tensor& mean, const at::Tensor& invstd,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias) {
  const auto acc = invstd.scalar_type();
  const int64_t C = mean.numel();
  at::Tensor scale = at::empty_like(invstd), shift = at::empty_like(invstd);
  at::Tensor hi = at::empty_like(invstd), lo = at::empty_like(invstd);
  const at::Tensor w = has(weight) ? as_acc(*weight, acc) : at::Tensor();
  const at::Tensor b = has(bias) ? as_acc(*bias, acc) : at::Tensor();
  for_acc(acc, [&](auto zero) {
    using acc_t = decltype(zero);
    const double* m = mean.const_data_ptr<double>();
    acc_t* ph = hi.mutable_data_ptr<acc_t>();
    acc_t* pl = lo.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      ph[c] = static_cast<acc_t>(m[c]);
      pl[c] = static_cast<acc_t>(m[c] - static_cast<double>(ph[c]));
    }
    const acc_t* is = invstd.const_data_ptr<acc_t>();
    const acc_t* wp = w.defined() ? w.const_data_ptr<acc_t>() : nullptr;
    const acc_t* bp = b.defined() ? b.const_data_ptr<acc_t>() : nullptr;
    acc_t* sc = scale.mutable_data_ptr<acc_t>();
    acc_t* sh = shift.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < C; ++c) {
      sc[c] = wp ? wp[c] * is[c] : is[c];
      sh[c] = bp ? bp[c] : acc_t(0);
    }
  });
  return {hi, lo, invstd, scale, shift};
}

void update_running_stats(const std::optional<at::Tensor>& running_mean,
                          const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                          const at::Tensor& var, double momentum, int64_t count) {
  if (!has(running_mean)) return;
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  at::Tensor rm = *running_mean, rv = *running_var;
  const auto kind = rm.scalar_type();
  if ((kind != at::kFloat && kind != at::kDouble) || rv.scalar_type() != kind ||
      !rm.is_contiguous() || !rv.is_contiguous()) {
    // Running stats in a reduced dtype or another layout: a few ATen ops.
    rm.mul_(1 - momentum).add_(mean.to(kind), momentum);
    rv.mul_(1 - momentum).add_((var * unbias).to(rv.scalar_type()), momentum);
    return;
  }
  for_acc(kind, [&](auto zero) {
    using run_t = decltype(zero);
    const double* m = mean.const_data_ptr<double>();
    const double* v = var.const_data_ptr<double>();
    run_t* pm = rm.mutable_data_ptr<run_t>();
    run_t* pv = rv.mutable_data_ptr<run_t>();
    for (int64_t c = 0; c < mean.numel(); ++c) {
      pm[c] = static_cast<run_t>((1 - momentum) * pm[c] + momentum * m[c]);
      pv[c] = static_cast<run_t>((1 - momentum) * pv[c] + momentum * v[c] * unbias);
    }
  });
  // The writes above bypass ATen's in-place ops: tell autograd and caches
  // (Tensor._version) that the buffers changed.
  rm.unsafeGetTensorImpl()->bump_version();
  rv.unsafeGetTensorImpl()->bump_version();
}

GradInputCoefs grad_input_coefs(const ChannelAffine& affine, const at::Tensor& sum_g,
                                const at::Tensor& sum_gx, bool training, int64_t count) {
  if (!training) return {affine.scale, at::zeros_like(sum_g), at::zeros_like(sum_g)};
  at::Tensor b = at::empty_like(sum_g), d = at::empty_like(sum_g);
  for_acc(sum_g.scalar_type(), [&](auto zero) {
    using acc_t = decltype(zero);
    const acc_t* sc = affine.scale.const_data_ptr<acc_t>();
    const acc_t* is = affine.invstd.const_data_ptr<acc_t>();
    const acc_t* sg = sum_g.const_data_ptr<acc_t>();
    const acc_t* sgx = sum_gx.const_data_ptr<acc_t>();
    acc_t* pb = b.mutable_data_ptr<acc_t>();
    acc_t* pd = d.mutable_data_ptr<acc_t>();
    const acc_t inv_n = acc_t(1) / static_cast<acc_t>(count);
    for (int64_t c = 0; c < sum_g.numel(); ++c) {
      pb[c] = -sc[c] * is[c] * is[c] * sgx[c] * inv_n;
      pd[c] = -sc[c] * sg[c] * inv_n;
    }
  });
  return {affine.scale, b, d};
}

std::pair<at::Tensor, at::Tensor> param_grads(const ChannelAffine& affine, const at::Tensor& sum_g,
                                              const at::Tensor& sum_gx,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& bias) {
  at::Tensor grad_weight = at::empty_like(sum_gx);
  for_acc(sum_gx.scalar_type(), [&](auto zero) {
    using acc_t = decltype(zero);
    const acc_t* sgx = sum_gx.const_data_ptr<acc_t>();
    const acc_t* is = affine.invstd.const_data_ptr<acc_t>();
    acc_t* gw = grad_weight.mutable_data_ptr<acc_t>();
    for (int64_t c = 0; c < sum_gx.numel(); ++c) gw[c] = sgx[c] * is[c];
  });
  auto in_dtype_of = [](const at::Tensor& g, const std::optional<at::Tensor>& p) {
    return has(p) && p->scalar_type() != g.scalar_type() ? g.to(p->scalar_type()) : g;
  };
  return {in_dtype_of(grad_weight, weight), in_dtype_of(sum_g, bias)};
}

}  // namespace resnet_fast::cpu
