#include "checks.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <utility>

namespace resnet_fast {
namespace {

// Whether two tensors may share an element: views of one storage whose
// elements ATen cannot tell apart (MemOverlapStatus::TooHard, two strided
// views) count as sharing, since refusing is safe. Tensors of different
// storages never do (get_overlap_status says TooHard for any non-dense pair).
bool may_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.has_storage() || !b.has_storage()) return false;
  if (!a.storage().is_alias_of(b.storage())) return false;
  return at::get_overlap_status(a, b) != at::MemOverlapStatus::No;
}

}  // namespace

bool has(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

at::ScalarType acc_type_of(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(is_supported_float(t.scalar_type()), name,
              " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

void check_same_as(const at::Tensor& t, const char* name, const at::Tensor& ref,
                   const char* ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), name, " must have the shape of ", ref_name, " ",
              ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the device of ", ref_name, " (",
              ref.device(), "), got ", t.device());
}

void check_bn_input(const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "input must be 4-D [N, C, H, W], got ", input.dim(),
              "-D with shape ", input.sizes());
  check_float(input, "input");
}

void check_channel_vector(const std::optional<at::Tensor>& t, const char* name,
                          const at::Tensor& input) {
  if (!has(t)) return;
  const int64_t C = input.size(1);
  TORCH_CHECK(t->dim() == 1 && t->numel() == C, name, " must be a 1-D tensor of ", C,
              " elements (the channels of input ", input.sizes(), "), got shape ", t->sizes());
  check_float(*t, name);
  TORCH_CHECK(t->device() == input.device(), name, " must be on the device of input (",
              input.device(), "), got ", t->device());
}

void check_channel_stat(const at::Tensor& t, const char* name, const at::Tensor& input,
                        at::ScalarType dtype) {
  const int64_t C = input.size(1);
  TORCH_CHECK(t.dim() == 1 && t.numel() == C && t.scalar_type() == dtype, name, " must be a [", C,
              "] ", dtype, " tensor, got ", t.sizes(), " ", t.scalar_type());
  TORCH_CHECK(t.device() == input.device(), name, " must be on the device of input (",
              input.device(), "), got ", t.device());
}

void check_finite_nonneg(const char* name, double value) {
  TORCH_CHECK(std::isfinite(value) && value >= 0, name,
              " must be a finite number >= 0, got ", value);
}

void check_running_stats(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                         const std::optional<at::Tensor>& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, bool training) {
  check_channel_vector(running_mean, "running_mean", input);
  check_channel_vector(running_var, "running_var", input);
  TORCH_CHECK(has(running_mean) == has(running_var),
              "running_mean and running_var must be given together");
  TORCH_CHECK(training || has(running_mean),
              "running_mean must be defined in evaluation mode");
  if (!training || !has(running_mean)) return;
  const std::pair<const at::Tensor*, const char*> written[] = {{&*running_mean, "running_mean"},
                                                                {&*running_var, "running_var"}};
  for (const auto& [t, name] : written) {
    TORCH_CHECK(at::has_internal_overlap(*t) != at::MemOverlap::Yes, name,
                " is written in training and must not have overlapping elements, got strides ",
                t->strides());
  }
  TORCH_CHECK(!may_overlap(*running_mean, *running_var),
              "running_mean and running_var must not share memory (both are written in "
              "training), got the same memory");
  const std::pair<const std::optional<at::Tensor>*, const char*> read[] = {
      {nullptr, "input"}, {&residual, "residual"}, {&weight, "weight"}, {&bias, "bias"}};
  for (const auto& [t, name] : read) {
    const at::Tensor& r = t == nullptr ? input : (has(*t) ? **t : at::Tensor());
    if (!r.defined()) continue;
    for (const auto& [s, sname] : written) {
      TORCH_CHECK(!may_overlap(*s, r), sname, " must not share memory with ", name,
                  " (it is written in training while ", name, " is read)");
    }
  }
}

void check_affine_and_stats(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                            const char* mean_name, const at::Tensor& invstd,
                            const char* invstd_name) {
  check_channel_vector(weight, "weight", input);
  check_channel_vector(bias, "bias", input);
  check_channel_stat(mean, mean_name, input, at::kDouble);
  check_channel_stat(invstd, invstd_name, input, acc_type_of(input));
}

void check_bn_forward(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& running_mean,
                      const std::optional<at::Tensor>& running_var, bool training,
                      double momentum, double eps) {
  check_bn_input(input);
  if (has(residual)) check_same_as(*residual, "residual", input, "input");
  check_channel_vector(weight, "weight", input);
  check_channel_vector(bias, "bias", input);
  check_running_stats(input, residual, weight, bias, running_mean, running_var, training);
  check_finite_nonneg("eps", eps);
  check_finite_nonneg("momentum", momentum);
  const int64_t per_channel = input.numel() / std::max<int64_t>(input.size(1), 1);
  TORCH_CHECK(!training || per_channel != 1 || input.size(1) == 0,
              "Expected more than 1 value per channel when training, got input size ",
              input.sizes());
}

void check_bn_backward(const at::Tensor& grad_out, const at::Tensor& input,
                       const std::optional<at::Tensor>& residual,
                       const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& save_mean,
                       const at::Tensor& save_invstd) {
  check_bn_input(input);
  check_same_as(grad_out, "grad_out", input, "input");
  if (has(residual)) check_same_as(*residual, "residual", input, "input");
  check_affine_and_stats(input, weight, bias, save_mean, "save_mean", save_invstd, "save_invstd");
}

void check_elementwise_pair(const at::Tensor& primary, const char* primary_name,
                            const at::Tensor& other, const char* other_name) {
  check_float(primary, primary_name);
  check_same_as(other, other_name, primary, primary_name);
}

}  // namespace resnet_fast
