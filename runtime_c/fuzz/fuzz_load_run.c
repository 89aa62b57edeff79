/* libFuzzer target: em_model_load + every run of whatever loads (see em_fuzz_common.h for the oracle).
 *
 *   cmake -S runtime_c -B build/fuzz -DCMAKE_C_COMPILER=clang -DEM_FUZZ=ON && cmake --build build/fuzz
 *   mkdir -p build/fuzz/new && build/fuzz/fuzz/em_fuzz_load_run build/fuzz/new runtime_c/fuzz/corpus \
 *       -max_total_time=600 -timeout=10 -rss_limit_mb=2048
 * (the first folder receives new inputs; the committed corpus stays read-only). */
#include <stddef.h>
#include <stdint.h>

#include "em_fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    em_fuzz_one(data, size, NULL);
    return 0;
}
