// AVX-512 (F, BW, VL, DQ) build of the CPU kernels; see capability_avx2.cpp.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define RF_KERNEL_NS isa_avx512
#include "kernels_impl.h"

RF_DEFINE_KERNEL_TABLE(kernels_avx512, "avx512")
#else
#include "isa_kernels.h"
const resnet_fast::cpu::IsaKernels* resnet_fast::cpu::kernels_avx512() { return nullptr; }
#endif
