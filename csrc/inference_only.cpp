// The Autograd kernel of the inference-only ops (winograd_weight,
// winograd_conv3x3, taps_conv, taps_weight, taps_weight_grad): they have no
// gradient. A call runs the op below autograd; when grad mode is on and an
// input requires grad, its outputs get a graph node that refuses the
// backward pass with a message naming the op and the way to train (conv2d).
//
// In C++ because a Python autograd kernel costs about 4 us per call (Python
// dispatch), which a frozen ResNet-50 pays 33 times per forward, with
// nothing to differentiate.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace resnet_fast {
namespace {

// The tensor arguments that require grad, when grad mode is on.
std::vector<at::Tensor> requiring_grad(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  std::vector<at::Tensor> found;
  if (!at::GradMode::is_enabled()) return found;
  for (const c10::IValue& value : torch::jit::last(*stack, op.schema().arguments().size())) {
    if (value.isTensor() && value.toTensor().defined() && value.toTensor().requires_grad()) {
      found.push_back(value.toTensor());
    }
  }
  return found;
}

void no_gradient(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                 torch::jit::Stack* stack) {
  const std::vector<at::Tensor> inputs = requiring_grad(op, stack);
  {
    const at::AutoDispatchBelowAutograd below_autograd;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
  }
  if (inputs.empty()) return;
  auto refusal = c10::make_intrusive<torch::autograd::Error>(
      "resnet_fast: " + op.schema().name() +
          " is an inference op with no gradient; differentiate "
          "torch.nn.functional.conv2d instead",
      torch::autograd::collect_next_edges(inputs));
  for (const c10::IValue& value : torch::jit::last(*stack, op.schema().returns().size())) {
    if (value.isTensor()) torch::autograd::set_history(value.toTensor(), refusal);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(resnet_fast, Autograd, m) {
  for (const char* name :
       {"winograd_weight", "winograd_conv3x3", "taps_conv", "taps_weight", "taps_weight_grad"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&no_gradient>());
  }
}

}  // namespace resnet_fast
