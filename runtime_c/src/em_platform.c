/* Platform hooks: the one thing the runtime needs from the OS is a monotonic clock, and only for
 * profiling (a run with profiling off never calls it). A board without one builds with
 * -DEM_PLATFORM_NO_CLOCK (profiles then read 0), or with -DEM_PLATFORM_CUSTOM_CLOCK and provides
 * em_platform_now_ns() itself (e.g. from a cycle counter). */
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#endif

#include <stdlib.h>

#include "em_internal.h"

static void *default_alloc(void *user, size_t bytes)
{
    (void)user;
    return malloc(bytes);
}

static void default_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

em_allocator em_allocator_or_default(const em_allocator *allocator)
{
    em_allocator a;
    if (allocator != NULL) return *allocator;
    a.alloc = default_alloc;
    a.free = default_free;
    a.user = NULL;
    return a;
}

#if defined(EM_PLATFORM_CUSTOM_CLOCK)
/* provided by the board */
#elif defined(EM_PLATFORM_NO_CLOCK)
uint64_t em_platform_now_ns(void)
{
    return 0;
}
#elif defined(_WIN32)
#include <windows.h>
uint64_t em_platform_now_ns(void)
{
    LARGE_INTEGER count, freq;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&freq);
    return (uint64_t)((double)count.QuadPart * 1e9 / (double)freq.QuadPart);
}
#else
#include <time.h>
uint64_t em_platform_now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif
