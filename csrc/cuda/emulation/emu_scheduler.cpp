// The block scheduler: runs a grid's blocks one after another on the calling
// OS thread, each block's threads as fibers resumed round-robin, and checks
// the barrier and shuffle rules that a GPU leaves undefined.
//
// A round resumes every thread that is not waiting, in thread order; each
// runs until it returns or waits at a __syncthreads or a shuffle. When all
// have stopped, the scheduler releases what it can:
//   1. a shuffle: per warp (tid / 32, threadIdx numbered x-fastest as in
//      CUDA), once every live lane named in the mask waits at it, the values
//      are exchanged at once (every lane's result read before any lane runs
//      on, which is what two barriers around a slot array achieve) and those
//      lanes run on; warps are independent, as on the GPU.
//   2. otherwise a barrier: every thread that has not returned waits at a
//      __syncthreads (returned threads count as arrived, as on sm_70+), all
//      at the same call site, and all are released.
// Anything else is a CUDA bug and aborts with a message naming the kernel,
// the block, the threads and the call sites: a barrier or shuffle reached by
// part of the threads (divergence), a shuffle reading a lane that returned
// or does not exist.
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "emu_fibers.h"

namespace resnet_fast::emulation {
namespace detail {
namespace {

enum class Wait : unsigned char { kRunning, kBarrier, kShuffle, kDone };

struct Lane {
  Wait wait = Wait::kRunning;
  const char* file = nullptr;  // where it waits
  int line = 0;
  // A shuffle: the posted value, the exchange, the result.
  std::uint64_t value = 0, result = 0;
  unsigned mask = 0, size = 0;
  int lane_mask = 0;
};

// The running launch and block. Plain globals: the fibers read them, and a
// fiber must not see another OS thread's copy (launches are serialized).
struct Current {
  const LaunchInfo* info = nullptr;
  void (*thread_main)(void*) = nullptr;
  void* call = nullptr;
  std::vector<Lane> lanes;
  unsigned threads = 0, done = 0;
  unsigned tid = 0;  // the thread whose fiber runs
  FiberHandle scheduler = nullptr;
};

Current cur;
LaunchRecord last{nullptr, nullptr, dim3(), dim3()};
std::vector<LaunchRecord> recent;  // a ring of kRecentLaunches, from recent_next
std::size_t recent_next = 0;

void record(const LaunchRecord& r) {
  if (recent.size() < kRecentLaunches) {
    recent.push_back(r);
  } else {
    recent[recent_next] = r;
  }
  recent_next = (recent_next + 1) % kRecentLaunches;
}

std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

void fail(const char* fmt, ...) {
  std::fprintf(stderr, "resnet_fast CUDA emulation: kernel %s launched from %s, block (%u, %u, %u): ",
               cur.info->kernel, cur.info->caller, g_block_idx.x, g_block_idx.y, g_block_idx.z);
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
  std::fputc('\n', stderr);
  std::fflush(stderr);
  std::abort();
}

std::string thread_name(unsigned tid) {
  const dim3 b = g_block_dim;
  char s[96];
  std::snprintf(s, sizeof s, "thread (%u, %u, %u) (tid %u, warp %u, lane %u)", tid % b.x,
                tid / b.x % b.y, tid / (b.x * b.y), tid, tid / 32, tid % 32);
  return s;
}

const char* wait_name(Wait w) {
  switch (w) {
    case Wait::kBarrier: return "__syncthreads";
    case Wait::kShuffle: return "__shfl_xor_sync";
    case Wait::kRunning: return "(running)";
    case Wait::kDone: return "(returned)";
  }
  return "?";
}

bool same_site(const Lane& a, const Lane& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

// Each fiber runs this forever: one thread of a block per turn of the loop,
// then back to the scheduler, which resumes it for its next block.
void fiber_entry() {
  for (;;) {
    cur.thread_main(cur.call);
    cur.lanes[cur.tid].wait = Wait::kDone;
    ++cur.done;
    switch_to(cur.scheduler);
  }
}

void resume(unsigned tid) {
  const dim3 b = g_block_dim;
  cur.tid = tid;
  g_thread_idx = uint3{tid % b.x, tid / b.x % b.y, tid / (b.x * b.y)};
  switch_to(pool_fiber(tid, fiber_entry));
}

// Exchanges the values of the warp that starts at `first` if every live lane
// its mask names waits at the same shuffle. Returns whether it did.
bool resolve_shuffle(unsigned first) {
  const unsigned end = first + 32 < cur.threads ? first + 32 : cur.threads;
  const Lane* ref = nullptr;
  unsigned ref_tid = 0;
  for (unsigned t = first; t < end; ++t) {
    if (cur.lanes[t].wait == Wait::kShuffle) {
      ref = &cur.lanes[t];
      ref_tid = t;
      break;
    }
  }
  if (ref == nullptr) return false;
  for (unsigned t = first; t < end; ++t) {
    const Lane& l = cur.lanes[t];
    const bool named = (ref->mask >> (t - first)) & 1u;
    if (l.wait == Wait::kShuffle) {
      if (!same_site(l, *ref) || l.mask != ref->mask || l.size != ref->size)
        fail("%s waits at __shfl_xor_sync at %s:%d (mask 0x%08x) while %s waits at "
             "__shfl_xor_sync at %s:%d (mask 0x%08x): lanes of a warp at different shuffles",
             thread_name(t).c_str(), l.file, l.line, l.mask, thread_name(ref_tid).c_str(),
             ref->file, ref->line, ref->mask);
    } else if (l.wait == Wait::kBarrier && named) {
      fail("%s waits at __syncthreads at %s:%d while %s waits at __shfl_xor_sync at %s:%d, "
           "whose mask names it: divergent warp",
           thread_name(t).c_str(), l.file, l.line, thread_name(ref_tid).c_str(), ref->file,
           ref->line);
    }
  }
  for (unsigned t = first; t < end; ++t) {
    Lane& l = cur.lanes[t];
    if (l.wait != Wait::kShuffle) continue;
    const unsigned lane = t - first;
    if (!((l.mask >> lane) & 1u))
      fail("%s calls __shfl_xor_sync at %s:%d with mask 0x%08x, which leaves it out",
           thread_name(t).c_str(), l.file, l.line, l.mask);
    const unsigned src_lane = lane ^ static_cast<unsigned>(l.lane_mask);
    if (src_lane >= 32) {  // beyond the warp: CUDA returns the caller's own value
      l.result = l.value;
      continue;
    }
    const unsigned src = first + src_lane;
    if (!((l.mask >> src_lane) & 1u))
      fail("%s reads lane %u at __shfl_xor_sync at %s:%d, which mask 0x%08x leaves out "
           "(undefined in CUDA)",
           thread_name(t).c_str(), src_lane, l.file, l.line, l.mask);
    if (src >= cur.threads)
      fail("%s reads lane %u at __shfl_xor_sync at %s:%d: the block has %u threads, so that "
           "lane does not exist (undefined in CUDA)",
           thread_name(t).c_str(), src_lane, l.file, l.line, cur.threads);
    if (cur.lanes[src].wait != Wait::kShuffle)
      fail("%s reads lane %u at __shfl_xor_sync at %s:%d, but %s has already returned "
           "(undefined in CUDA)",
           thread_name(t).c_str(), src_lane, l.file, l.line, thread_name(src).c_str());
    l.result = cur.lanes[src].value;
  }
  for (unsigned t = first; t < end; ++t)
    if (cur.lanes[t].wait == Wait::kShuffle) cur.lanes[t].wait = Wait::kRunning;
  return true;
}

// Releases a __syncthreads that every thread still running waits at.
void resolve_barrier() {
  const Lane* ref = nullptr;
  unsigned ref_tid = 0;
  for (unsigned t = 0; t < cur.threads; ++t) {
    const Lane& l = cur.lanes[t];
    if (l.wait == Wait::kDone) continue;
    if (l.wait != Wait::kBarrier)  // a shuffle left unresolved has failed already
      fail("%s is stopped at %s: scheduler bug", thread_name(t).c_str(), wait_name(l.wait));
    if (ref == nullptr) {
      ref = &l;
      ref_tid = t;
    } else if (!same_site(l, *ref)) {
      fail("%s waits at __syncthreads at %s:%d while %s waits at __syncthreads at %s:%d: "
           "divergent barrier (undefined in CUDA)",
           thread_name(t).c_str(), l.file, l.line, thread_name(ref_tid).c_str(), ref->file,
           ref->line);
    }
  }
  for (unsigned t = 0; t < cur.threads; ++t)
    if (cur.lanes[t].wait == Wait::kBarrier) cur.lanes[t].wait = Wait::kRunning;
}

void run_block() {
  for (Lane& l : cur.lanes) l = Lane{};
  cur.done = 0;
  while (cur.done < cur.threads) {
    for (unsigned t = 0; t < cur.threads; ++t)
      if (cur.lanes[t].wait == Wait::kRunning) resume(t);
    if (cur.done == cur.threads) break;
    bool shuffled = false;
    for (unsigned w = 0; w < cur.threads; w += 32) shuffled |= resolve_shuffle(w);
    if (!shuffled) resolve_barrier();
  }
}

bool valid_shape(const dim3& g, const dim3& b) {
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  return g.x >= 1 && g.y >= 1 && g.z >= 1 && g.x <= 0x7fffffffu && g.y <= 65535 &&
         g.z <= 65535 && b.x >= 1 && b.y >= 1 && b.z >= 1 && b.x <= 1024 && b.y <= 1024 &&
         b.z <= 64 && threads <= 1024;
}

}  // namespace

void run_grid(const LaunchInfo& info, void (*thread_main)(void*), void* call) {
  const std::lock_guard<std::mutex> lock(launch_mutex());
  last = LaunchRecord{info.kernel, info.caller, info.grid, info.block};
  record(last);
  if (!valid_shape(info.grid, info.block)) {
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  cur.info = &info;
  cur.thread_main = thread_main;
  cur.call = call;
  cur.threads = info.block.x * info.block.y * info.block.z;
  cur.lanes.assign(cur.threads, Lane{});
  cur.scheduler = this_context();
  g_block_dim = info.block;
  g_grid_dim = info.grid;
  for (unsigned z = 0; z < info.grid.z; ++z) {
    for (unsigned y = 0; y < info.grid.y; ++y) {
      for (unsigned x = 0; x < info.grid.x; ++x) {
        g_block_idx = uint3{x, y, z};
        run_block();
      }
    }
  }
  for (unsigned t = 0; t < cur.threads; ++t) {
    if (stack_nearly_full(t))
      fail("a fiber used its %zu-byte stack to within %zu bytes of the guard page: set "
           "RESNET_FAST_EMU_STACK_KB higher",
           stack_size(), kStackReserve);
  }
  g_thread_idx = uint3{0, 0, 0};
  cur.info = nullptr;
}

namespace {

void require_kernel(const char* what, const char* file, int line) {
  if (cur.info != nullptr) return;
  std::fprintf(stderr, "resnet_fast CUDA emulation: %s at %s:%d called outside a kernel\n", what,
               file, line);
  std::abort();
}

}  // namespace

void barrier(const char* file, int line) {
  require_kernel("__syncthreads", file, line);
  Lane& l = cur.lanes[cur.tid];
  l.wait = Wait::kBarrier;
  l.file = file;
  l.line = line;
  switch_to(cur.scheduler);
}

std::uint64_t shuffle_xor(const char* file, int line, unsigned mask, std::uint64_t bits,
                          unsigned size, int lane_mask, int width) {
  require_kernel("__shfl_xor_sync", file, line);
  if (width != 32)
    fail("__shfl_xor_sync at %s:%d with width %d: the emulation supports width 32 only", file,
         line, width);
  Lane& l = cur.lanes[cur.tid];
  l.wait = Wait::kShuffle;
  l.file = file;
  l.line = line;
  l.mask = mask;
  l.value = bits;
  l.size = size;
  l.lane_mask = lane_mask;
  switch_to(cur.scheduler);
  return l.result;
}

}  // namespace detail

LaunchRecord last_launch() {
  const std::lock_guard<std::mutex> lock(detail::launch_mutex());
  return detail::last;
}

std::vector<LaunchRecord> recent_launches() {
  const std::lock_guard<std::mutex> lock(detail::launch_mutex());
  std::vector<LaunchRecord> out;
  const std::size_t n = detail::recent.size();
  const std::size_t first = n < kRecentLaunches ? 0 : detail::recent_next;
  for (std::size_t i = 0; i < n; ++i) out.push_back(detail::recent[(first + i) % n]);
  return out;
}

std::size_t fiber_stack_size() { return detail::stack_size(); }
std::size_t fiber_stack_high_water() { return detail::stack_high_water(); }
std::size_t fiber_count() { return detail::pool_size(); }

}  // namespace resnet_fast::emulation
