// The fibers that run a block's threads (libco), pooled per OS thread.
// Internal to the emulation's .cpp files.
#pragma once

#include <cstddef>

namespace resnet_fast::emulation::detail {

// The fiber side of a switch: what the scheduler's fibers call.
using FiberHandle = void*;

// Fiber `i` of the calling OS thread's pool, created on first use (the pool
// grows to the largest block launched and is kept: creating 256 fibers per
// block would cost more than the work of most blocks). Every fiber runs
// `entry`, which must never return.
FiberHandle pool_fiber(std::size_t i, void (*entry)());

// The OS thread's own context (the scheduler's).
FiberHandle this_context();

void switch_to(FiberHandle fiber);

// Whether fiber i has used its stack up to its last kStackReserve bytes (a
// frame nearer the guard page would have faulted, or is about to).
constexpr std::size_t kStackReserve = 1024;
bool stack_nearly_full(std::size_t i);

std::size_t stack_size();
std::size_t stack_high_water();
std::size_t pool_size();

}  // namespace resnet_fast::emulation::detail
