// Runtime flags as compile-time ones: with_flags(a, b, f) calls f with
// std::bool_constant<a> and std::bool_constant<b>, so that every
// combination of flags instantiates its own kernel, free of branches on
// them. Plain C++17 (no ATen, no CUDA headers): the CPU kernels (one build
// per ISA: the lambdas passed in are the ISA's own types, so each build
// instantiates its own copies) and the CUDA launchers both include it.
#pragma once

#include <type_traits>

namespace resnet_fast {

template <typename F>
decltype(auto) with_flags(bool a, F&& f) {
  if (a) return f(std::true_type{});
  return f(std::false_type{});
}

template <typename F>
decltype(auto) with_flags(bool a, bool b, F&& f) {
  return with_flags(a, [&](auto fa) {
    return with_flags(b, [&](auto fb) { return f(fa, fb); });
  });
}

}  // namespace resnet_fast
