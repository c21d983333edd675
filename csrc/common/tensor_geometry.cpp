#include "tensor_geometry.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <limits>
#include <string>

namespace resnet_fast {
namespace {

bool rows_ok(const at::Tensor& t) { return t.size(1) == 1 || t.stride(1) == 1; }
bool planar_ok(const at::Tensor& t) { return t.size(3) == 1 || t.stride(3) == 1; }
bool walkable(const at::Tensor& t, Layout layout) {
  return layout == Layout::kRows ? rows_ok(t) : planar_ok(t);
}
at::MemoryFormat format_of(Layout layout) {
  return layout == Layout::kRows ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace

Dtype dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Dtype::kFloat;
    case at::kDouble: return Dtype::kDouble;
    case at::kHalf: return Dtype::kHalf;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: TORCH_CHECK(false, "resnet_fast: unsupported dtype ", t);
  }
}

Strides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

Strides strides_or_none(const at::Tensor& t) { return t.defined() ? strides_of(t) : Strides{}; }

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

ChannelVector channel_vector(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return {};
  return {t->const_data_ptr(), dtype_of(t->scalar_type()), t->stride(0)};
}

MutableChannelVector mutable_channel_vector(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return {};
  return {t->mutable_data_ptr(), dtype_of(t->scalar_type()), t->stride(0)};
}

Layout harmonize_layout(at::Tensor& input, std::initializer_list<at::Tensor*> others) {
  const bool prefer_rows = rows_ok(input) && (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                                              input.size(2) * input.size(3) == 1);
  Layout layout;
  if (prefer_rows) {
    layout = Layout::kRows;
  } else if (planar_ok(input)) {
    layout = Layout::kPlanar;
  } else if (rows_ok(input)) {
    layout = Layout::kRows;
  } else {
    TORCH_WARN_ONCE("resnet_fast: input with strides ", input.strides(),
                    " is copied to a dense layout first (no kernel walk covers it)");
    layout = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? Layout::kRows
                                                                             : Layout::kPlanar;
    input = input.contiguous(format_of(layout));
  }
  for (at::Tensor* t : others) {
    if (!t->defined() || walkable(*t, layout)) continue;
    // A broadcast tensor (a gradient of .sum(), say) is materialized quietly:
    // every implementation has to. A dense one in another memory format is a
    // layout mismatch worth fixing, hence the warning.
    if (t->is_non_overlapping_and_dense()) {
      TORCH_WARN_ONCE("resnet_fast: a tensor with strides ", t->strides(),
                      " is copied to the memory format of the input (", input.strides(),
                      "); this happens where a gradient comes back contiguous for a channels_last "
                      "activation (PyTorch's average-pool backward does so)");
    }
    *t = t->contiguous(format_of(layout));
  }
  return layout;
}

bool poison_outputs() {
  static const bool enabled = [] {
    const char* env = std::getenv("RESNET_FAST_POISON_OUTPUTS");
    return env != nullptr && std::string(env) == "1";
  }();
  return enabled;
}

at::Tensor empty_for(const at::Tensor& like, Layout layout) {
  at::Tensor out = at::empty(like.sizes(), like.options().memory_format(format_of(layout)));
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

Geometry geometry_of(const at::Tensor& input, Layout layout) {
  return {input.size(0), input.size(1), input.size(2), input.size(3), layout, dtype_of(input.scalar_type())};
}

at::Tensor dense_operand(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous(t.suggest_memory_format());
}

at::Tensor dense_like(const at::Tensor& t, const at::Tensor& primary) {
  if (t.strides() == primary.strides()) return t;
  // Broadcast tensors (a gradient of .sum()) are materialized without a word.
  if (t.is_non_overlapping_and_dense())
    TORCH_WARN_ONCE("resnet_fast: add_relu operands with different strides (", t.strides(), " vs ",
                    primary.strides(), ") are copied to one layout first");
  at::Tensor copy = at::empty_like(primary);  // dense primary: exactly its strides
  copy.copy_(t);
  return copy;
}

at::Tensor empty_dense_like(const at::Tensor& like) {
  at::Tensor out = at::empty_like(like);  // dense `like`: exactly its strides
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

}  // namespace resnet_fast
