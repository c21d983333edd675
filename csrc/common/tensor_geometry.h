// From at::Tensor to the kernels' plain Geometry/Strides/ChannelVector, and
// the choice of walk (planar lines or channels_last rows) shared by all
// operands of a call: the host code of every device (csrc/ops/), so that
// every backend (and the fake kernels of resnet_fast/_ops/contract.py) lays
// out its outputs the same way.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <optional>

#include "kernel_params.h"

namespace resnet_fast {

Dtype dtype_of(at::ScalarType t);
Strides strides_of(const at::Tensor& t);  // t: [N, C, H, W]

// Strides of an optional operand (an undefined tensor: none, all zero), and
// its data (nullptr).
Strides strides_or_none(const at::Tensor& t);
const void* data_or_null(const at::Tensor& t);

// A [C] vector as the kernels take it; absent (data == nullptr) when `t` is.
ChannelVector channel_vector(const std::optional<at::Tensor>& t);
MutableChannelVector mutable_channel_vector(const std::optional<at::Tensor>& t);

// Picks the walk for `input` and makes every tensor in `others` (same sizes)
// walkable with it. Layouts that no walk covers (for example a view strided
// along W in NCHW, or a gradient in another memory format than its input)
// are copied into input's memory format, with a one-time warning: the copy
// costs a pass over memory and should be visible.
Layout harmonize_layout(at::Tensor& input, std::initializer_list<at::Tensor*> others);

// RESNET_FAST_POISON_OUTPUTS=1 (read once; the tests set it) fills every
// output with NaN before a kernel writes it, so an element a kernel skips
// shows up in the comparison with the reference.
bool poison_outputs();

// An uninitialized (or poisoned) [N, C, H, W] tensor laid out for `layout`.
at::Tensor empty_for(const at::Tensor& like, Layout layout);

Geometry geometry_of(const at::Tensor& input, Layout layout);

// Elementwise ops (add_relu) walk dense storage element by element, on every
// device. `t` itself when it is non-overlapping and dense, else a copy in its
// suggested memory format.
at::Tensor dense_operand(const at::Tensor& t);

// `t` with the strides of the dense `primary`: itself when they match, else a
// copy (warned once when `t` is a dense tensor in another memory format).
at::Tensor dense_like(const at::Tensor& t, const at::Tensor& primary);

// An uninitialized (or poisoned) tensor with the strides of the dense `like`.
at::Tensor empty_dense_like(const at::Tensor& like);

}  // namespace resnet_fast
