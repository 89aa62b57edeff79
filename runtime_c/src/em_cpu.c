/* What this CPU and build can run: kernel sets, their names, and the cpu-features line.
 *
 * x86: SSE2, AVX2+FMA and AVX-512F kernels are compiled into every x86 build (per-file target flags);
 * which may run is checked here with CPUID and, for AVX, XGETBV (the OS must save the YMM/ZMM state).
 * No caching: the check is a few instructions and runs once per model load, and the runtime keeps no
 * global state. ARM: NEON is a build property (always on aarch64; armv7 when compiled with NEON). */
#include <string.h>

#include "em_internal.h"
#include "opt/em_micro.h"

#if defined(EM_HAVE_X86_SIMD) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define EM_X86_CPUID_GNU 1
#elif defined(EM_HAVE_X86_SIMD) && defined(_MSC_VER)
#include <intrin.h>
#define EM_X86_CPUID_MSVC 1
#endif

#if defined(EM_X86_CPUID_GNU) || defined(EM_X86_CPUID_MSVC)
/* leaf/subleaf → eax, ebx, ecx, edx; returns 0 when the leaf does not exist */
static int cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
#if defined(EM_X86_CPUID_GNU)
    unsigned a, b, c, d;
    if (__get_cpuid_max(leaf & 0x80000000u, NULL) < leaf) return 0;
    __cpuid_count(leaf, subleaf, a, b, c, d);
    regs[0] = a;
    regs[1] = b;
    regs[2] = c;
    regs[3] = d;
    return 1;
#else
    int r[4];
    __cpuid(r, 0);
    if ((uint32_t)r[0] < leaf) return 0;
    __cpuidex(r, (int)leaf, (int)subleaf);
    regs[0] = (uint32_t)r[0];
    regs[1] = (uint32_t)r[1];
    regs[2] = (uint32_t)r[2];
    regs[3] = (uint32_t)r[3];
    return 1;
#endif
}

static uint64_t xgetbv0(void)
{
#if defined(EM_X86_CPUID_GNU)
    uint32_t lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
#else
    return (uint64_t)_xgetbv(0);
#endif
}

static int x86_supports(uint32_t kernels)
{
    uint32_t leaf1[4], leaf7[4];
    uint64_t xcr0;
    if (!cpuid(1, 0, leaf1)) return 0;
    if (kernels == EM_KERNELS_SSE2) return (leaf1[3] >> 26) & 1u;
    /* AVX needs OSXSAVE (ECX 27) and the OS saving XMM + YMM state (XCR0 bits 1, 2) */
    if (!((leaf1[2] >> 27) & 1u)) return 0;
    xcr0 = xgetbv0();
    if ((xcr0 & 0x6u) != 0x6u) return 0;
    if (!cpuid(7, 0, leaf7)) return 0;
    if (kernels == EM_KERNELS_AVX2) /* AVX (ECX 28), FMA (ECX 12), AVX2 (leaf 7 EBX 5) */
        return ((leaf1[2] >> 28) & 1u) && ((leaf1[2] >> 12) & 1u) && ((leaf7[1] >> 5) & 1u);
    if (kernels == EM_KERNELS_AVX512) /* AVX-512F (leaf 7 EBX 16) + opmask/ZMM state (XCR0 bits 5-7) */
        return ((leaf7[1] >> 16) & 1u) && (xcr0 & 0xE0u) == 0xE0u && ((leaf1[2] >> 12) & 1u) &&
               ((leaf7[1] >> 5) & 1u);
    return 0;
}

/* VNNI (vpdpbusd) on top of a set x86_supports() accepts: AVX512_VNNI is leaf 7 ECX bit 11 (needs the
 * avx512 set's ZMM state), AVX-VNNI leaf 7 subleaf 1 EAX bit 4 (the VEX form on YMM: the avx2 set's state).
 * Subleaf 1 exists where subleaf 0's EAX (the highest subleaf) is at least 1. */
static int x86_has_vnni(uint32_t kernels)
{
    uint32_t leaf7[4], leaf7_1[4];
    if (!x86_supports(kernels) || !cpuid(7, 0, leaf7)) return 0;
#if defined(EM_HAVE_X86_AVX512_VNNI)
    if (kernels == EM_KERNELS_AVX512) return (leaf7[2] >> 11) & 1u;
#endif
#if defined(EM_HAVE_X86_AVX_VNNI)
    if (kernels == EM_KERNELS_AVX2) return leaf7[0] >= 1u && cpuid(7, 1, leaf7_1) && ((leaf7_1[0] >> 4) & 1u);
#endif
    (void)leaf7_1;
    return 0;
}
#endif

/* The int8 tiles of LUT ops with int8 activations use vpdpbusd where this is 1 (em_int8_gemm_micro_for):
 * AVX512_VNNI for the avx512 set, AVX-VNNI for the avx2 set, where the CPU has it and this build compiled
 * that tile (x86/int8_gemm_avx512vnni.c, int8_gemm_avxvnni.c); 0 for every other set and non-x86 builds. */
int em_cpu_has_x86_vnni(uint32_t kernels)
{
#if defined(EM_X86_CPUID_GNU) || defined(EM_X86_CPUID_MSVC)
    return x86_has_vnni(kernels);
#else
    (void)kernels;
    return 0;
#endif
}

uint32_t em_cpu_x86_vnni_sets(void)
{
    return (em_cpu_has_x86_vnni(EM_KERNELS_AVX512) ? 1u << EM_KERNELS_AVX512 : 0u) |
           (em_cpu_has_x86_vnni(EM_KERNELS_AVX2) ? 1u << EM_KERNELS_AVX2 : 0u);
}

#if defined(EM_HAVE_ARM_DOTPROD) && defined(__linux__)
#include <sys/auxv.h>
#endif

/* The ARMv8.2 dot-product instructions (sdot/udot; Linux HWCAP asimddp, bit 20 of AT_HWCAP on aarch64):
 * the int8 tiles of LUT ops with int8 activations use sdot where this is 1 (em_int8_gemm_micro_for).
 * Cortex-A76 (Raspberry Pi 5) has them, the A72 (Pi 4) and A53 (Pi 3) do not. Only Linux is asked; other
 * systems use the ARMv8.0 path. */
int em_cpu_has_arm_dotprod(void)
{
#if defined(EM_HAVE_ARM_DOTPROD) && defined(__linux__)
    return (getauxval(AT_HWCAP) & (1ul << 20)) != 0;
#else
    return 0;
#endif
}

int em_cpu_supports(uint32_t kernels)
{
    switch (kernels) {
    case EM_KERNELS_AUTO:
    case EM_KERNELS_REFERENCE:
    case EM_KERNELS_GENERIC:
        return 1;
#if defined(EM_X86_CPUID_GNU) || defined(EM_X86_CPUID_MSVC)
    case EM_KERNELS_SSE2:
    case EM_KERNELS_AVX2:
    case EM_KERNELS_AVX512:
        return x86_supports(kernels);
#endif
#if defined(EM_HAVE_NEON)
    case EM_KERNELS_NEON:
        return 1;
#endif
    default:
        return 0;
    }
}

int em_kernels_available(uint32_t kernels)
{
    return kernels < EM_KERNELS_COUNT && em_cpu_supports(kernels);
}

uint32_t em_kernels_resolve(uint32_t kernels)
{
    /* Best first. On this project's reference host (AVX-512) the AVX-512 set is the fastest; see
     * em_bench_kernels for the per-kernel comparison. */
    static const uint32_t preference[] = {EM_KERNELS_AVX512, EM_KERNELS_AVX2, EM_KERNELS_NEON, EM_KERNELS_SSE2,
                                          EM_KERNELS_GENERIC};
    size_t i;
    if (kernels != EM_KERNELS_AUTO) return kernels;
    for (i = 0; i < sizeof preference / sizeof preference[0]; ++i)
        if (em_cpu_supports(preference[i])) return preference[i];
    return EM_KERNELS_GENERIC;
}

static const char *const kernel_set_names[EM_KERNELS_COUNT] = {"auto", "ref", "generic", "sse2", "avx2", "avx512",
                                                               "neon"};

const char *em_kernels_name(uint32_t kernels)
{
    return kernels < EM_KERNELS_COUNT ? kernel_set_names[kernels] : "unknown";
}

int em_kernels_from_name(const char *name, uint32_t *out_kernels)
{
    uint32_t k;
    if (name == NULL) return 0;
    for (k = 0; k < EM_KERNELS_COUNT; ++k) {
        if (strcmp(name, kernel_set_names[k]) == 0) {
            if (out_kernels != NULL) *out_kernels = k;
            return 1;
        }
    }
    if (strcmp(name, "reference") == 0) {
        if (out_kernels != NULL) *out_kernels = EM_KERNELS_REFERENCE;
        return 1;
    }
    return 0;
}

#if defined(EM_HAVE_OPENBLAS)
#define EM_BLAS_LINE "BLAS: OpenBLAS"
#else
#define EM_BLAS_LINE "BLAS: none (own GEMM)"
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#define EM_ARCH_LINE "aarch64"
#elif defined(__arm__) || defined(_M_ARM)
#define EM_ARCH_LINE "arm (32-bit)"
#elif defined(__x86_64__) || defined(_M_X64)
#define EM_ARCH_LINE "x86_64"
#elif defined(__i386__) || defined(_M_IX86)
#define EM_ARCH_LINE "x86 (32-bit)"
#elif defined(__riscv)
#define EM_ARCH_LINE "riscv"
#else
#define EM_ARCH_LINE "unknown architecture"
#endif

const char *em_runtime_cpu_features(void)
{
    /* One literal per outcome, so the string needs no buffer (no global state). */
#if defined(EM_X86_CPUID_GNU) || defined(EM_X86_CPUID_MSVC)
    /* "(vnni...)": the int8 tiles of int8-activation LUT ops use vpdpbusd (em_int8_gemm_micro_for) */
    const int vnni512 = em_cpu_has_x86_vnni(EM_KERNELS_AVX512), vnni256 = em_cpu_has_x86_vnni(EM_KERNELS_AVX2);
    if (em_cpu_supports(EM_KERNELS_AVX512)) {
        if (vnni512 && vnni256)
            return EM_ARCH_LINE " (avx512_vnni avx_vnni); kernels: avx512 avx2 sse2 generic ref; " EM_BLAS_LINE;
        if (vnni512) return EM_ARCH_LINE " (avx512_vnni); kernels: avx512 avx2 sse2 generic ref; " EM_BLAS_LINE;
        if (vnni256) return EM_ARCH_LINE " (avx_vnni); kernels: avx512 avx2 sse2 generic ref; " EM_BLAS_LINE;
        return EM_ARCH_LINE "; kernels: avx512 avx2 sse2 generic ref; " EM_BLAS_LINE;
    }
    if (em_cpu_supports(EM_KERNELS_AVX2)) {
        if (vnni256) return EM_ARCH_LINE " (avx_vnni); kernels: avx2 sse2 generic ref; " EM_BLAS_LINE;
        return EM_ARCH_LINE "; kernels: avx2 sse2 generic ref; " EM_BLAS_LINE;
    }
    if (em_cpu_supports(EM_KERNELS_SSE2)) return EM_ARCH_LINE "; kernels: sse2 generic ref; " EM_BLAS_LINE;
    return EM_ARCH_LINE "; kernels: generic ref; " EM_BLAS_LINE;
#elif defined(EM_HAVE_NEON)
    if (em_cpu_has_arm_dotprod()) return EM_ARCH_LINE " (dotprod); kernels: neon generic ref; " EM_BLAS_LINE;
    return EM_ARCH_LINE "; kernels: neon generic ref; " EM_BLAS_LINE;
#else
    return EM_ARCH_LINE "; kernels: generic ref (SIMD off in this build); " EM_BLAS_LINE;
#endif
}

void em_runtime_set_blas_threads(int threads)
{
    em_blas_set_threads(threads);
}
