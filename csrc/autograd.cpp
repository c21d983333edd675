// The autograd formulas of the differentiable ops (bn_act_fwd,
// bn_add_act_fwd, add_relu_fwd), one per op for every namespace that
// implements the resnet_fast ops: torch.ops.resnet_fast (the C++ CPU and
// CUDA kernels) and the namespaces declared from Python with the same
// schemas (Triton's, the pure-PyTorch reference's, the CUDA emulation's).
// register_autograd(ns) registers them at ns's Autograd key; each backward
// calls ns's own backward op.
//
// In C++ because the same formulas as a Python autograd.Function cost
// about 20 us more per op, forward and backward together (measured): on the
// small maps of a CIFAR ResNet that is as much as the kernels' work.
//
// The forward BN ops mutate the running statistics (Tensor(a!)? in their
// schemas), which torch.library.register_autograd refuses; so, like a
// custom op's autograd kernel, the forward calls the op below autograd.
#include "autograd.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace resnet_fast {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using BnActFwd = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const OptTensor&,
                                                    const OptTensor&, const OptTensor&,
                                                    const OptTensor&, bool, double, double, bool);
using BnActBwd = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                    const OptTensor&, const OptTensor&,
                                                    const Tensor&, const Tensor&, bool, bool);
using BnAddActFwd = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                       const OptTensor&, const OptTensor&,
                                                       const OptTensor&, const OptTensor&, bool,
                                                       double, double, bool);
using BnAddActBwd = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
    const Tensor&, const Tensor&, bool, bool);
using AddRelu = Tensor(const Tensor&, const Tensor&);

// One namespace's ops, looked up once.
struct NamespaceOps {
  explicit NamespaceOps(const std::string& ns, int64_t index)
      : index(index),
        bn_act_fwd(find<BnActFwd>(ns, "bn_act_fwd")),
        bn_act_bwd(find<BnActBwd>(ns, "bn_act_bwd")),
        bn_add_act_fwd(find<BnAddActFwd>(ns, "bn_add_act_fwd")),
        bn_add_act_bwd(find<BnAddActBwd>(ns, "bn_add_act_bwd")),
        add_relu_fwd(find<AddRelu>(ns, "add_relu_fwd")),
        add_relu_bwd(find<AddRelu>(ns, "add_relu_bwd")) {}

  template <typename Sig>
  static c10::TypedOperatorHandle<Sig> find(const std::string& ns, const char* name) {
    return c10::Dispatcher::singleton().findSchemaOrThrow((ns + "::" + name).c_str(), "")
        .typed<Sig>();
  }

  int64_t index;  // in registry(): what a backward finds its namespace by
  c10::TypedOperatorHandle<BnActFwd> bn_act_fwd;
  c10::TypedOperatorHandle<BnActBwd> bn_act_bwd;
  c10::TypedOperatorHandle<BnAddActFwd> bn_add_act_fwd;
  c10::TypedOperatorHandle<BnAddActBwd> bn_add_act_bwd;
  c10::TypedOperatorHandle<AddRelu> add_relu_fwd;
  c10::TypedOperatorHandle<AddRelu> add_relu_bwd;
};

// Registered namespaces and their libraries, never freed: kernels registered
// on the dispatcher may run until the process ends. A deque keeps each
// entry's address while others are added.
struct Registry {
  std::mutex mutex;
  std::deque<NamespaceOps> ops;
  std::vector<std::unique_ptr<torch::Library>> libraries;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

const NamespaceOps& ops_at(int64_t index) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  return r.ops.at(static_cast<size_t>(index));
}

const char kOps[] = "ops";

bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

// Whether the call needs a graph node: grad mode on and an input requiring grad.
template <typename... Ts>
bool needs_graph(const Ts&... tensors) {
  return at::GradMode::is_enabled() && (requires_grad(tensors) || ...);
}

Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

OptTensor as_optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// bn_act_fwd / bn_add_act_fwd (with a residual): gradients of input
// [, residual], weight, bias; none for the running statistics and scalars.
struct BnActFunction : public torch::autograd::Function<BnActFunction> {
  static variable_list forward(AutogradContext* ctx, const NamespaceOps* ops, const Tensor& input,
                               const OptTensor& residual, const OptTensor& weight,
                               const OptTensor& bias, const OptTensor& running_mean,
                               const OptTensor& running_var, bool training, double momentum,
                               double eps, bool relu) {
    std::tuple<Tensor, Tensor, Tensor> out;
    {
      const at::AutoDispatchBelowAutograd below_autograd;
      out = residual.has_value()
                ? ops->bn_add_act_fwd.call(input, *residual, weight, bias, running_mean,
                                           running_var, training, momentum, eps, relu)
                : ops->bn_act_fwd.call(input, weight, bias, running_mean, running_var, training,
                                       momentum, eps, relu);
    }
    auto& [output, save_mean, save_invstd] = out;
    ctx->mark_non_differentiable({save_mean, save_invstd});
    ctx->save_for_backward({input, or_undefined(residual), or_undefined(weight),
                            or_undefined(bias), save_mean, save_invstd});
    ctx->saved_data[kOps] = ops->index;
    ctx->saved_data["training"] = training;
    ctx->saved_data["relu"] = relu;
    return {output, save_mean, save_invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const NamespaceOps& ops = ops_at(ctx->saved_data[kOps].toInt());
    const bool training = ctx->saved_data["training"].toBool();
    const bool relu = ctx->saved_data["relu"].toBool();
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &residual = saved[1], &weight = saved[2], &bias = saved[3];
    const Tensor &save_mean = saved[4], &save_invstd = saved[5];
    Tensor grad_input, grad_residual, grad_weight, grad_bias;
    if (residual.defined()) {
      std::tie(grad_input, grad_residual, grad_weight, grad_bias) =
          ops.bn_add_act_bwd.call(grads[0], input, residual, as_optional(weight),
                                  as_optional(bias), save_mean, save_invstd, training, relu);
    } else {
      std::tie(grad_input, grad_weight, grad_bias) =
          ops.bn_act_bwd.call(grads[0], input, as_optional(weight), as_optional(bias), save_mean,
                              save_invstd, training, relu);
    }
    // The backward ops return gradients for absent affine parameters too.
    if (!weight.defined()) grad_weight = Tensor();
    if (!bias.defined()) grad_bias = Tensor();
    // One per forward argument: ops, input, residual, weight, bias,
    // running_mean, running_var, training, momentum, eps, relu.
    return {Tensor(), grad_input, grad_residual, grad_weight, grad_bias, Tensor(),
            Tensor(),  Tensor(),   Tensor(),      Tensor(),    Tensor()};
  }
};

struct AddReluFunction : public torch::autograd::Function<AddReluFunction> {
  static variable_list forward(AutogradContext* ctx, const NamespaceOps* ops, const Tensor& input,
                               const Tensor& other) {
    Tensor output;
    {
      const at::AutoDispatchBelowAutograd below_autograd;
      output = ops->add_relu_fwd.call(input, other);
    }
    ctx->save_for_backward({output});
    ctx->saved_data[kOps] = ops->index;
    return {output};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const NamespaceOps& ops = ops_at(ctx->saved_data[kOps].toInt());
    const Tensor grad = ops.add_relu_bwd.call(grads[0], ctx->get_saved_variables()[0]);
    return {Tensor(), grad, grad};
  }
};

using BnOutputs = std::tuple<Tensor, Tensor, Tensor>;

BnOutputs as_tuple(const variable_list& v) { return {v[0], v[1], v[2]}; }

void register_kernels(torch::Library& lib, const NamespaceOps* ops) {
  lib.impl("bn_act_fwd",
           torch::dispatch(c10::DispatchKey::Autograd,
                           [ops](const Tensor& input, const OptTensor& weight,
                                 const OptTensor& bias, const OptTensor& running_mean,
                                 const OptTensor& running_var, bool training, double momentum,
                                 double eps, bool relu) -> BnOutputs {
                             if (!needs_graph(input, weight, bias)) {
                               const at::AutoDispatchBelowAutograd below_autograd;
                               return ops->bn_act_fwd.call(input, weight, bias, running_mean,
                                                           running_var, training, momentum, eps,
                                                           relu);
                             }
                             return as_tuple(BnActFunction::apply(
                                 ops, input, std::nullopt, weight, bias, running_mean,
                                 running_var, training, momentum, eps, relu));
                           }));
  lib.impl("bn_add_act_fwd",
           torch::dispatch(c10::DispatchKey::Autograd,
                           [ops](const Tensor& input, const Tensor& residual,
                                 const OptTensor& weight, const OptTensor& bias,
                                 const OptTensor& running_mean, const OptTensor& running_var,
                                 bool training, double momentum, double eps,
                                 bool relu) -> BnOutputs {
                             if (!needs_graph(input, residual, weight, bias)) {
                               const at::AutoDispatchBelowAutograd below_autograd;
                               return ops->bn_add_act_fwd.call(input, residual, weight, bias,
                                                               running_mean, running_var,
                                                               training, momentum, eps, relu);
                             }
                             return as_tuple(BnActFunction::apply(
                                 ops, input, OptTensor(residual), weight, bias, running_mean,
                                 running_var, training, momentum, eps, relu));
                           }));
  lib.impl("add_relu_fwd",
           torch::dispatch(c10::DispatchKey::Autograd,
                           [ops](const Tensor& input, const Tensor& other) -> Tensor {
                             if (!needs_graph(input, other)) {
                               const at::AutoDispatchBelowAutograd below_autograd;
                               return ops->add_relu_fwd.call(input, other);
                             }
                             return AddReluFunction::apply(ops, input, other)[0];
                           }));
}

}  // namespace

void register_autograd(const std::string& ns) {
  Registry& r = registry();
  const NamespaceOps* ops = nullptr;
  {
    const std::lock_guard<std::mutex> lock(r.mutex);
    r.ops.emplace_back(ns, static_cast<int64_t>(r.ops.size()));
    ops = &r.ops.back();
  }
  auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, ns, std::nullopt, __FILE__,
                                              __LINE__);
  register_kernels(*lib, ops);
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.libraries.push_back(std::move(lib));
}

}  // namespace resnet_fast
