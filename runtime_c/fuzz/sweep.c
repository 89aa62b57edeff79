/* em_fuzz_sweep MODEL.emm...: a systematic mutation sweep over valid models, each case checked by the
 * fuzzing oracle (em_fuzz_common.h: clean status or a run that keeps every promise) under a 10-second
 * watchdog. Cases, for every file:
 *   - truncations: every cut inside the header and section table, every section boundary +-4 bytes, and
 *     random cuts; each as a plain prefix and as a prefix whose file_bytes and CRCs are re-sealed;
 *   - every 32-bit word of the header and of every section table entry set to edge values
 *     (0, 1, word +-1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, the alignment, a bit flip), re-sealed or not;
 *   - every 32-bit word of TASKS, GRAPH and TENSORS (and the head of META) set to edge values, re-sealed,
 *     so that the loader's record checks (not the CRCs) have to catch them;
 *   - random single-byte flips and random multi-byte smears, re-sealed or not.
 * Prints the case count and the slowest case; any broken contract aborts, a case over 10 s aborts with
 * its name, and sanitizer builds report any memory error. Exit status 0 when every case was clean.
 *
 *   em_fuzz_sweep [--random N] [--seed S] MODEL.emm... */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sigaction */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "em_fuzz_common.h"
#include "edgemerge/em_format.h"

#define WATCHDOG_SECONDS 10u

static char g_case[256];      /* the case under way, for the watchdog's message */
static double g_slowest_s;     /* slowest case so far */
static char g_slowest[256];
static unsigned long g_cases;

static void on_alarm(int sig)
{
    static const char head[] = "em_fuzz_sweep: case took more than 10 s (hang?): ";
    (void)sig;
    /* async-signal-safe output only */
    if (write(2, head, sizeof head - 1) < 0 || write(2, g_case, strlen(g_case)) < 0 || write(2, "\n", 1) < 0) {
    }
    abort();
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t g_rng = 12345u;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void run_case(const uint8_t *buf, size_t size, em_fuzz_stats *stats)
{
    double t0 = now_s(), dt;
    alarm(WATCHDOG_SECONDS);
    em_fuzz_one(buf, size, stats);
    alarm(0);
    dt = now_s() - t0;
    ++g_cases;
    if (dt > g_slowest_s) {
        g_slowest_s = dt;
        memcpy(g_slowest, g_case, sizeof g_slowest);
    }
}

/* A copy of the model with the word at `offset` set to `value`, optionally re-sealed, checked. */
static void word_case(const uint8_t *model, size_t size, uint8_t *work, size_t offset, uint32_t value, int reseal,
                      const char *where, em_fuzz_stats *stats)
{
    memcpy(work, model, size);
    emb_put_u32(work + offset, value);
    if (reseal) em_fuzz_reseal(work, size, 0);
    snprintf(g_case, sizeof g_case, "%s: word at %zu set to 0x%08X%s", where, offset, (unsigned)value,
             reseal ? ", CRCs re-sealed" : "");
    run_case(work, size, stats);
}

static void edge_words(const uint8_t *model, size_t size, uint8_t *work, size_t offset, int reseal_both,
                       const char *where, em_fuzz_stats *stats)
{
    const uint32_t orig = emb_get_u32(model + offset);
    const uint32_t values[] = {0u, 1u, orig + 1u, orig - 1u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu, 64u,
                               orig ^ 0x100u, orig * 2u, EM_MAX_DIM + 1u, 65537u};
    size_t k;
    for (k = 0; k < sizeof values / sizeof values[0]; ++k) {
        if (values[k] == orig) continue;
        word_case(model, size, work, offset, values[k], 1, where, stats);
        if (reseal_both) word_case(model, size, work, offset, values[k], 0, where, stats);
    }
}

static void cut_case(const uint8_t *model, size_t cut, uint8_t *work, em_fuzz_stats *stats)
{
    uint8_t *prefix = (uint8_t *)malloc(cut ? cut : 1); /* exact size: a sanitizer sees reads past the end */
    if (cut) memcpy(prefix, model, cut);
    snprintf(g_case, sizeof g_case, "truncated to %zu bytes", cut);
    run_case(prefix, cut, stats);
    if (em_fuzz_reseal(prefix, cut, 1)) {
        snprintf(g_case, sizeof g_case, "truncated to %zu bytes, file_bytes and CRCs re-sealed", cut);
        run_case(prefix, cut, stats);
    }
    free(prefix);
    (void)work;
}

static int sweep_file(const char *path, unsigned long random_cases, em_fuzz_stats *stats)
{
    FILE *f = fopen(path, "rb");
    uint8_t *model, *work;
    size_t size, off, i, table_end;
    uint32_t sections, s;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "em_fuzz_sweep: cannot read %s\n", path);
        if (f) fclose(f);
        return 0;
    }
    size = (size_t)n;
    model = (uint8_t *)malloc(size ? size : 1);
    work = (uint8_t *)malloc(size ? size : 1);
    if (model == NULL || work == NULL || fread(model, 1, size, f) != size) {
        fclose(f);
        fprintf(stderr, "em_fuzz_sweep: cannot read %s\n", path);
        return 0;
    }
    fclose(f);
    snprintf(g_case, sizeof g_case, "%s as given", path);
    if (size < EM_HEADER_BYTES || em_fuzz_one(model, size, stats) != 0) {
        fprintf(stderr, "em_fuzz_sweep: %s is not a valid model (the sweep starts from one)\n", path);
        return 0;
    }
    sections = emb_get_u32(model + 24);
    table_end = EM_HEADER_BYTES + (size_t)sections * EM_SECTION_ENTRY_BYTES;

    /* truncations */
    for (off = 0; off <= table_end + 8 && off < size; ++off) cut_case(model, off, work, stats);
    for (s = 0; s < sections; ++s) {
        const uint8_t *e = model + EM_HEADER_BYTES + (size_t)s * EM_SECTION_ENTRY_BYTES;
        const size_t start = (size_t)emb_get_u64(e + 8), end = start + (size_t)emb_get_u64(e + 16);
        long d;
        for (d = -4; d <= 4; ++d) {
            if ((long)start + d > (long)table_end + 8 && (size_t)((long)start + d) < size)
                cut_case(model, (size_t)((long)start + d), work, stats);
            if ((size_t)((long)end + d) < size && (long)end + d > (long)start + 4)
                cut_case(model, (size_t)((long)end + d), work, stats);
        }
    }
    for (i = 0; i < random_cases / 8; ++i) cut_case(model, rnd() % size, work, stats);

    /* header and section table words */
    for (off = 0; off < table_end; off += 4) edge_words(model, size, work, off, 1, "header/section table", stats);

    /* record words of TASKS, GRAPH, TENSORS, and the head of META */
    for (s = 0; s < sections; ++s) {
        const uint8_t *e = model + EM_HEADER_BYTES + (size_t)s * EM_SECTION_ENTRY_BYTES;
        const uint32_t kind = emb_get_u32(e);
        const size_t start = (size_t)emb_get_u64(e + 8), len = (size_t)emb_get_u64(e + 16);
        size_t limit = len;
        static const char *const names[] = {"?", "META", "TASKS", "GRAPH", "TENSORS", "DATA"};
        if (kind == EM_SECTION_DATA || kind > EM_SECTION_DATA) continue;
        if (kind == EM_SECTION_META && limit > 256) limit = 256;
        for (off = 0; off + 4 <= limit; off += 4)
            edge_words(model, size, work, start + off, 0, names[kind], stats);
    }

    /* random flips and smears */
    for (i = 0; i < random_cases; ++i) {
        const size_t at = rnd() % size;
        const int reseal = (int)(i & 1u);
        memcpy(work, model, size);
        if (i % 4 < 2) {
            work[at] ^= (uint8_t)(1u + rnd() % 255u);
            snprintf(g_case, sizeof g_case, "byte %zu flipped%s", at, reseal ? ", CRCs re-sealed" : "");
        } else {
            const size_t len = 2u + rnd() % 15u;
            size_t k;
            for (k = 0; k < len && at + k < size; ++k) work[at + k] = (uint8_t)rnd();
            snprintf(g_case, sizeof g_case, "%zu random bytes at %zu%s", len, at, reseal ? ", CRCs re-sealed" : "");
        }
        if (reseal) em_fuzz_reseal(work, size, 0);
        run_case(work, size, stats);
    }
    free(model);
    free(work);
    return 1;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    em_fuzz_stats stats;
    unsigned long random_cases = 4000;
    double t0 = now_s();
    int i, ok = 1, files = 0;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    memset(&stats, 0, sizeof stats);
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
            random_cases = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            g_rng = (uint32_t)strtoul(argv[++i], NULL, 10) | 1u;
        } else {
            ok &= sweep_file(argv[i], random_cases, &stats);
            ++files;
        }
    }
    if (files == 0) {
        fprintf(stderr, "usage: em_fuzz_sweep [--random N] [--seed S] MODEL.emm...\n");
        return 2;
    }
    em_fuzz_print_stats("em_fuzz_sweep", &stats);
    printf("em_fuzz_sweep: %lu cases over %d file(s) in %.1f s, slowest %.3f s (%s)\n", g_cases, files,
           now_s() - t0, g_slowest_s, g_slowest);
    return ok ? 0 : 1;
}
