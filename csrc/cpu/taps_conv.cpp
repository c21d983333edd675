// CPU entry point of the tap-by-tap convolution (taps_conv): a 3x3
// (padding 1) or 1x1 (padding 0) convolution of stride 1 or 2 as one matrix
// product per kernel tap, over only the pixel pairs inside the image
// (kernels/taps_impl.h), with the bias, residual add and ReLU fused into the
// pass that writes the output. On small maps (2x2, 4x4) oneDNN's direct
// convolution computes the padded taps too; this does not, and reads the
// weight once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "../common/tensor_geometry.h"
#include "conv_common.h"
#include "conv_ops.h"
#include "isa_choice.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// act(conv2d(input, weight, bias, stride, padding=k // 2) (+ residual)), with
// weight_taps = weight.permute(2, 3, 1, 0).reshape(k * k, C, K), k = 1 or 3.
//   input:       [N, C, H, W] dense channels_last, float32 or float64
//   weight_taps: [k * k, C, K] contiguous, input's dtype
//   bias:        [K] or None, input's dtype
//   residual:    [N, K, Ho, Wo] dense channels_last or None, input's dtype
//   stride:      1 or 2
// Returns [N, K, Ho, Wo] channels_last, Ho = ceil(H / stride), Wo likewise.
Tensor taps_conv_cpu(const Tensor& input, const Tensor& weight_taps, const OptTensor& bias,
                     const OptTensor& residual, bool relu, int64_t stride) {
  TORCH_CHECK(weight_taps.dim() == 3 && (weight_taps.size(0) == 1 || weight_taps.size(0) == 9),
              "resnet_fast: weight_taps must be [1 or 9, C_in, C_out] (a 1x1 or 3x3 kernel); got ",
              weight_taps.sizes());
  const int64_t taps = weight_taps.size(0);
  const ConvOperands ops =
      check_conv_operands(input, weight_taps, "weight_taps", taps,
                          "weight.permute(2, 3, 1, 0).reshape(k * k, C_in, C_out)", bias, residual, stride);
  Tensor out = conv_output(input, ops);
  if (out.numel() == 0) return out;
  const Tensor b = has(bias) ? bias->contiguous() : Tensor();
  const Dtype dtype = dtype_of(input.scalar_type());
  const int64_t pixels = ops.N * ops.Ho * ops.Wo;
  const WorkSplit split(pixels, ops.K);
  at::parallel_for(0, split.items(), 1, [&](int64_t i0, int64_t i1) {
    const Tensor sums = at::empty({split.chunk * split.block}, input.options());
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t chunk = item / split.blocks, block = item % split.blocks;
      const int64_t first = chunk * split.chunk, count = std::min(split.chunk, pixels - first);
      const int64_t k0 = block * split.block, Kb = std::min(split.block, ops.K - k0);
      isa_kernels().taps_conv(TapsConvParams{
          dtype, ops.N, ops.C, ops.H, ops.W, ops.K, taps == 9 ? 3 : 1, stride, ops.Ho, ops.Wo, first, count, k0,
          Kb, input.const_data_ptr(), weight_taps.const_data_ptr(), b.defined() ? b.const_data_ptr() : nullptr,
          has(residual) ? residual->const_data_ptr() : nullptr, out.mutable_data_ptr(), sums.mutable_data_ptr(),
          relu});
    }
  });
  return out;
}

// weight [K, C, k, k] -> [k * k, C, K], the form taps_conv takes (k = 1 or
// 3), or with `turned` [k * k, K, C], the taps of the input gradient's
// convolution (the kernels transposed and turned by 180 degrees: tap t of
// the turned kernel is tap k * k - 1 - t of the weight). The weight may be
// contiguous or channels_last (a model moved to channels_last moves its
// convolution weights too); it is read in an order that reads each cache
// line once (a permuted copy in the output's order reads a line per
// element).
Tensor taps_weight_cpu(const Tensor& weight, bool turned) {
  check_wide_float(weight, "weight");
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && (weight.size(2) == 1 || weight.size(2) == 3),
              "resnet_fast: weight must be [C_out, C_in, k, k] with k = 1 or 3; got ", weight.sizes());
  const bool cl = !weight.is_contiguous() && weight.is_contiguous(at::MemoryFormat::ChannelsLast);
  const Tensor w = cl ? weight : weight.contiguous();
  const int64_t K = w.size(0), C = w.size(1), taps = w.size(2) * w.size(3);
  // Element (k, c, t) of the weight, t = dy * k + dx: k * sK + c * sC + t * sT.
  const int64_t sK = w.stride(0), sC = w.stride(1), sT = cl ? C : 1;
  Tensor out = turned ? at::empty({taps, K, C}, w.options()) : at::empty({taps, C, K}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "taps_weight", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const auto at = [&](int64_t k, int64_t c, int64_t t) { return src[k * sK + c * sC + t * sT]; };
    if (turned) {  // rows (t, k) of the output, each read along c
      at::parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k)
          for (int64_t t = 0; t < taps; ++t)
            for (int64_t c = 0; c < C; ++c) dst[((taps - 1 - t) * K + k) * C + c] = at(k, c, t);
      });
      return;
    }
    if (!cl) {  // one input channel at a time: its k * k values per output channel lie together
      at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t k = 0; k < K; ++k)
            for (int64_t t = 0; t < taps; ++t) dst[(t * C + c) * K + k] = at(k, c, t);
      });
      return;
    }
    // channels_last: per tap a [K x C] to [C x K] transpose, in 16 x 16 tiles
    // (16 rows read, 16 written: few pages at a time; a whole row of output
    // channels per step scattered its writes over more pages than the TLB
    // holds, 4x slower).
    constexpr int64_t kTile = 16;
    const int64_t k_tiles = (K + kTile - 1) / kTile;
    at::parallel_for(0, taps * k_tiles, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t t = i / k_tiles, kb = i % k_tiles * kTile, ke = std::min(K, kb + kTile);
        for (int64_t cb = 0; cb < C; cb += kTile)
          for (int64_t c = cb; c < std::min(C, cb + kTile); ++c)
            for (int64_t k = kb; k < ke; ++k) dst[(t * C + c) * K + k] = at(k, c, t);
      }
    });
  });
  return out;
}

// The weight gradient of taps_conv (of conv2d with padding k // 2):
//   input:  [N, C, H, W] dense channels_last, float32 or float64
//   grad:   [N, K, Ho, Wo] dense channels_last, input's dtype, Ho = ceil(H / stride)
//   ksize:  1 or 3; stride: 1 or 2
//   channels_last: the layout of the weight the gradient is for
// Returns [K, C, k, k] in that layout (contiguous or channels_last, so that
// autograd need not copy it into the parameter's): for each tap, the
// sum over the pixel pairs inside the image of input^T grad. Work items are
// blocks of 48 input by 256 output channels, all taps: every sum runs on one
// thread, in pixel order, so the result does not depend on the thread count.
Tensor taps_weight_grad_cpu(const Tensor& input, const Tensor& grad, int64_t ksize, int64_t stride,
                            bool channels_last) {
  TORCH_CHECK(ksize == 1 || ksize == 3, "resnet_fast: ksize must be 1 or 3; got ", ksize);
  TORCH_CHECK(stride == 1 || stride == 2, "resnet_fast: stride must be 1 or 2; got ", stride);
  check_wide_float(input, "input");
  check_channels_last(input, "input");
  check_wide_float(grad, "grad");
  check_channels_last(grad, "grad");
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3), K = grad.size(1);
  const int64_t Ho = (H + stride - 1) / stride, Wo = (W + stride - 1) / stride;
  TORCH_CHECK(grad.size(0) == N && grad.size(2) == Ho && grad.size(3) == Wo &&
                  grad.scalar_type() == input.scalar_type(),
              "resnet_fast: grad must be [", N, ", C_out, ", Ho, ", ", Wo, "] of dtype ", input.scalar_type(),
              "; got ", grad.sizes(), " ", grad.scalar_type());
  const int64_t taps = ksize * ksize;
  Tensor grad_w = at::empty({K, C, ksize, ksize}, input.options().memory_format(
                                                       channels_last ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous));
  if (grad_w.numel() == 0) return grad_w;
  // Blocks of at most 48 input channels (a multiple of the kernel's 6 rows),
  // as even as can be: with 64 channels, 36 and 28 rather than 48 and 16.
  constexpr int64_t kColsPerItem = 256;
  const int64_t blocks_of_48 = (C + 47) / 48;
  const int64_t rows_per_item = ((C + blocks_of_48 - 1) / blocks_of_48 + 5) / 6 * 6;
  const int64_t c_blocks = (C + rows_per_item - 1) / rows_per_item;
  const int64_t k_blocks = (K + kColsPerItem - 1) / kColsPerItem;
  const Dtype dtype = dtype_of(input.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "taps_weight_grad", [&] {
    scalar_t* dst = grad_w.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, c_blocks * k_blocks, 1, [&](int64_t i0, int64_t i1) {
      // The item's sums tap by tap, [taps, Cb, Kb], then written out in
      // conv2d's [K, C, k, k] order.
      std::vector<scalar_t> sums(static_cast<size_t>(taps * rows_per_item * kColsPerItem));
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c0 = item / k_blocks * rows_per_item, k0 = item % k_blocks * kColsPerItem;
        const int64_t Cb = std::min(rows_per_item, C - c0), Kb = std::min(kColsPerItem, K - k0);
        for (int64_t tap = 0; tap < taps; ++tap)
          isa_kernels().taps_weight_grad(TapsWeightGradParams{dtype, N, C, H, W, K, ksize, stride, Ho, Wo, tap, c0,
                                                              Cb, k0, Kb, input.const_data_ptr(), grad.const_data_ptr(),
                                                              sums.data() + tap * Cb * Kb, Kb});
        // 16 output channels at a time: their rows of the gradient (16
        // pages) are written along, 16 contiguous sums read per tap and
        // input channel; a wider group spreads the writes over more pages
        // than the TLB holds (measured 4x slower with all 256 at once).
        // Element (k, c, t) of the gradient: k * C * taps + c * sC + t * sT;
        // the loops run along its rows (c then t, or t then c).
        const int64_t sC = channels_last ? 1 : taps, sT = channels_last ? C : 1;
        const int64_t outer = channels_last ? taps : Cb, inner = channels_last ? Cb : taps;
        for (int64_t kg = 0; kg < Kb; kg += 16)
          for (int64_t i = 0; i < outer; ++i)
            for (int64_t j = 0; j < inner; ++j) {
              const int64_t c = channels_last ? j : i, tap = channels_last ? i : j;
              for (int64_t k = kg; k < std::min(kg + 16, Kb); ++k)
                dst[(k0 + k) * C * taps + (c0 + c) * sC + tap * sT] = sums[(tap * Cb + c) * Kb + k];
            }
      }
    });
  });
  return grad_w;
}

}  // namespace

void register_taps_conv(torch::Library& m) {
  m.impl("taps_conv", &taps_conv_cpu);
  m.impl("taps_weight", &taps_weight_cpu);
  m.impl("taps_weight_grad", &taps_weight_grad_cpu);
}

}  // namespace resnet_fast::cpu
