// Fiber stacks and switches on libco (taken from HIP-CPU's copy, included
// from where it is: compile with -I <hip-cpu>/external/libco).
//
// Each stack is an mmap'd region above a PROT_NONE guard page, so that an
// overflow faults instead of corrupting the heap (libco's co_create stacks
// are plain malloc). Fresh pages are zero, which makes the used depth
// measurable without painting: the lowest non-zero byte.
#include "emu_fibers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

// libco's settings.h redefines the keyword `thread_local` as a macro for the
// rest of the translation unit: empty (no thread-local storage at all) unless
// LIBCO_MP is defined, and `__thread` with it (g++ defines __STDC__, so libco
// takes its C branch), which rejects the pool below. LIBCO_MP keeps libco's
// own state per OS thread (each OS thread has its own fibers); the #undef
// gives the keyword back.
#define LIBCO_MP
#include <libco.h>
#undef thread_local

namespace resnet_fast::emulation::detail {
namespace {

// libco keeps a fiber's saved registers at the base of its memory (7 words on
// amd64), below the stack, which grows down from the top.
constexpr std::size_t kContextBytes = 64;

// Measured (see README.md): the kernels use under 3 KB of stack per thread at
// -O0 and less when optimized; 64 KB leaves room for a debugging printf.
constexpr std::size_t kDefaultStackKb = 64;

std::size_t configured_stack_size() {
  std::size_t kb = kDefaultStackKb;
  if (const char* env = std::getenv("RESNET_FAST_EMU_STACK_KB")) {
    const long v = std::strtol(env, nullptr, 10);
    if (v >= 16 && v <= 65536) kb = static_cast<std::size_t>(v);
  }
  return kb * 1024;
}

struct Fiber {
  cothread_t handle;
  unsigned char* base;  // usable memory: [base, base + size), above the guard page
};

struct Pool {
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::size_t size = (configured_stack_size() + page - 1) / page * page;
  std::vector<Fiber> fibers;

  ~Pool() {
    for (const Fiber& f : fibers) munmap(f.base - page, size + page);
  }
};

thread_local Pool pool;

}  // namespace

FiberHandle pool_fiber(std::size_t i, void (*entry)()) {
  while (pool.fibers.size() <= i) {
    void* mem = mmap(nullptr, pool.size + pool.page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED || mprotect(mem, pool.page, PROT_NONE) != 0) {
      std::fprintf(stderr, "resnet_fast CUDA emulation: cannot map a fiber stack\n");
      std::abort();
    }
    unsigned char* base = static_cast<unsigned char*>(mem) + pool.page;
    cothread_t handle = co_derive(base, static_cast<unsigned>(pool.size), entry);
    pool.fibers.push_back({handle, base});
  }
  return pool.fibers[i].handle;
}

FiberHandle this_context() { return co_active(); }

void switch_to(FiberHandle fiber) { co_switch(fiber); }

namespace {

// Bytes of fiber i's stack ever written: from the lowest non-zero byte above
// the saved context to the top.
std::size_t used(const Fiber& f) {
  for (std::size_t k = kContextBytes; k < pool.size; k += sizeof(std::uint64_t)) {
    std::uint64_t w;
    __builtin_memcpy(&w, f.base + k, sizeof w);
    if (w != 0) return pool.size - k;
  }
  return 0;
}

}  // namespace

bool stack_nearly_full(std::size_t i) {
  const Fiber& f = pool.fibers[i];
  for (std::size_t k = kContextBytes; k < kContextBytes + kStackReserve; k += 8) {
    std::uint64_t w;
    __builtin_memcpy(&w, f.base + k, sizeof w);
    if (w != 0) return true;
  }
  return false;
}

std::size_t stack_size() { return pool.size; }

std::size_t stack_high_water() {
  std::size_t most = 0;
  for (const Fiber& f : pool.fibers) {
    const std::size_t u = used(f);
    if (u > most) most = u;
  }
  return most;
}

std::size_t pool_size() { return pool.fibers.size(); }

}  // namespace resnet_fast::emulation::detail
