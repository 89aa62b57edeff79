/* The one fuzzing oracle shared by the libFuzzer target (fuzz_load_run.c), the corpus replayer
 * (em_fuzz_replay: ctest replays corpus/ and regressions/ with it) and the mutation sweep (em_fuzz_sweep).
 *
 * em_fuzz_one() loads a byte buffer with em_model_load; when the load only failed on a checksum it loads a
 * copy with every CRC re-sealed too, so that mutations reach the deeper checks instead of stopping at the
 * CRCs. Every model that loads is exercised: accessors, too-small and misaligned context memory, then (if
 * its context and its arithmetic are small, see EM_FUZZ_MAX_*) em_run_all twice in two contexts whose
 * memory was pre-filled with different garbage, and em_run_task for every task. Any broken promise of the
 * API (a status outside em_status, a failed load that leaves *out_model set, a message that is not
 * NUL-terminated, runs that disagree bit for bit) is reported on stderr and abort()s: a crash for the
 * fuzzer, a failure for the tests. Memory errors are the sanitizers' to report. */
#ifndef EDGEMERGE_EM_FUZZ_COMMON_H
#define EDGEMERGE_EM_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "em_test_bytes.h" /* tests/: emb_get_u32, emb_put_u32 (little-endian fields) */

/* Models that would need more run-time memory than this (context + inputs + outputs) are loaded and
 * checked but not run, so the fuzzer never runs out of memory. */
#define EM_FUZZ_MAX_RUN_BYTES ((size_t)64 << 20)
/* ... and likewise models whose one run would take more than about this many multiply-adds (a conv with a
 * 64x64 kernel over a large input is a valid model, and a slow one), so no input hangs the fuzzer. */
#define EM_FUZZ_MAX_RUN_OPS 20000000.0

typedef struct em_fuzz_stats {
    uint64_t inputs;         /* buffers checked */
    uint64_t loaded_raw;     /* loaded as given */
    uint64_t loaded_resealed; /* loaded only after the CRCs were re-sealed */
    uint64_t ran;            /* loaded models that were run */
    uint64_t skipped_large;  /* loaded models not run because of the bounds above */
    uint64_t by_status[16];  /* status of the raw load, by code (>= 15 counted in 15) */
} em_fuzz_stats;

/* Checks one buffer (see above). stats may be NULL. Returns the status of the raw load. */
int em_fuzz_one(const uint8_t *data, size_t size, em_fuzz_stats *stats);

/* Copies buf and re-seals every section CRC, the section table CRC and the header CRC, with every read
 * bounded by size (the buffer may be garbage). Also sets header.file_bytes to size when fix_length.
 * Returns 0 when there is no header to seal. */
int em_fuzz_reseal(uint8_t *buf, size_t size, int fix_length);

/* Prints the counters ("label: N inputs, ..."). */
void em_fuzz_print_stats(const char *label, const em_fuzz_stats *stats);

#endif /* EDGEMERGE_EM_FUZZ_COMMON_H */
