/* em_run: load an .emm model and run one task on a raw float32 input file.
 *
 *   em_run MODEL --task T --input IN.f32 --output OUT.f32 [--runs N] [--info]
 *   em_run MODEL --info
 *
 * IN.f32 holds the task's input (H×W×C little-endian float32, NHWC); OUT.f32 receives the logits
 * (written to a new OUT.f32.tmp-XXXXXXXX, then renamed: tools/em_file_out.h). --task is a
 * task name or index. Every failure prints one message on stderr and exits non-zero:
 * 1 for a runtime or file problem, 2 for a usage mistake. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgemerge/em_runtime.h"
#include "em_file_out.h"

#define TIMES "\xC3\x97" /* U+00D7 MULTIPLICATION SIGN, UTF-8 */

typedef struct options {
    const char *model_path;
    const char *task;
    const char *input_path;
    const char *output_path;
    long runs;
    int timing; /* --runs given: print the times */
    int info;
} options;

/* Memory the tool owns; release_all() frees whatever is set, so every exit path is the same. */
typedef struct resources {
    void *model_block; /* malloc'd, the model buffer is its 64-byte aligned interior */
    em_model *model;
    void *context_memory;
    float *input;
    float *output;
    double *times_ms;
} resources;

static void release_all(resources *r)
{
    free(r->times_ms);
    free(r->output);
    free(r->input);
    free(r->context_memory);
    em_model_free(r->model);
    free(r->model_block);
}

static int fail(resources *r, const char *fmt, ...)
{
    va_list args;
    fputs("em_run: error: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    release_all(r);
    return 1;
}

static void usage(FILE *to)
{
    fputs("usage: em_run MODEL --task T --input IN.f32 --output OUT.f32 [--runs N] [--info]\n"
          "       em_run MODEL --info\n"
          "  MODEL         an .emm file\n"
          "  --task T      task name or index\n"
          "  --input IN    raw little-endian float32 input, H" TIMES "W" TIMES "C values (NHWC)\n"
          "  --output OUT  raw float32 logits (a regular file; written to a temporary, then renamed)\n"
          "  --runs N      run N times, print each run's time and the median (ms)\n"
          "  --info        print the format version, tasks, nodes and CPU features\n",
          to);
}

static int parse_options(int argc, char **argv, options *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->runs = 1;
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char **value = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--info") == 0) {
            o->info = 1;
            continue;
        } else if (strcmp(a, "--task") == 0) {
            value = &o->task;
        } else if (strcmp(a, "--input") == 0) {
            value = &o->input_path;
        } else if (strcmp(a, "--output") == 0) {
            value = &o->output_path;
        } else if (strcmp(a, "--runs") == 0) {
            char *end;
            if (i + 1 >= argc) {
                fprintf(stderr, "em_run: error: --runs needs a value\n");
                return 0;
            }
            errno = 0;
            o->runs = strtol(argv[++i], &end, 10);
            o->timing = 1;
            if (errno != 0 || *end != '\0' || o->runs < 1 || o->runs > 1000000) {
                fprintf(stderr, "em_run: error: --runs %s: expected a whole number in 1..1000000\n", argv[i]);
                return 0;
            }
            continue;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "em_run: error: unknown option %s\n", a);
            return 0;
        } else if (o->model_path == NULL) {
            o->model_path = a;
            continue;
        } else {
            fprintf(stderr, "em_run: error: unexpected argument %s (the model is %s)\n", a, o->model_path);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "em_run: error: %s needs a value\n", a);
            return 0;
        }
        *value = argv[++i];
    }
    if (o->model_path == NULL) {
        fprintf(stderr, "em_run: error: no MODEL given\n");
        return 0;
    }
    if (!o->info || o->task || o->input_path || o->output_path) {
        if (!o->task || !o->input_path || !o->output_path) {
            fprintf(stderr, "em_run: error: running a task needs --task, --input and --output\n");
            return 0;
        }
    }
    return 1;
}

/* Reads a whole file into malloc'd memory at a 64-byte aligned address (*block is what to free). */
static int read_file_aligned(const char *path, void **block, unsigned char **data, size_t *size, char *why,
                             size_t why_size)
{
    FILE *f = fopen(path, "rb");
    long end;
    size_t got;
    *block = NULL;
    if (f == NULL) {
        snprintf(why, why_size, "%s", strerror(errno));
        return 0;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(why, why_size, "cannot determine its size (%s)", strerror(errno));
        fclose(f);
        return 0;
    }
    *size = (size_t)end;
    *block = malloc(*size + 64u);
    if (*block == NULL) {
        snprintf(why, why_size, "out of memory for %zu bytes", *size);
        fclose(f);
        return 0;
    }
    *data = (unsigned char *)*block + (64u - (size_t)((uintptr_t)*block % 64u)) % 64u;
    got = fread(*data, 1, *size, f);
    if (got != *size || ferror(f)) {
        snprintf(why, why_size, "read %zu of %zu bytes", got, *size);
        fclose(f);
        return 0;
    }
    fclose(f);
    return 1;
}

static int resolve_task(const em_model *model, const char *text, uint32_t *task)
{
    int32_t found = em_model_find_task(model, text); /* a name first: names may be digits */
    char *end;
    unsigned long index;
    if (found >= 0) {
        *task = (uint32_t)found;
        return 1;
    }
    errno = 0;
    index = strtoul(text, &end, 10);
    if (errno == 0 && end != text && *end == '\0' && index < em_model_task_count(model)) {
        *task = (uint32_t)index;
        return 1;
    }
    return 0;
}

/* A name from the file made safe to print: bytes outside printable ASCII (ESC, CR, LF, other controls,
 * and bytes of multi-byte UTF-8) and the backslash become \xNN, so a file cannot forge output lines or
 * send terminal escape codes. Truncated (with "...") to fit `out`. */
static const char *safe_name(const char *name, char *out, size_t size)
{
    size_t at = 0;
    for (; *name != '\0'; ++name) {
        const unsigned char c = (unsigned char)*name;
        if (at + 8 > size) {
            memcpy(out + at, "...", 4);
            return out;
        }
        if (c >= 0x20 && c < 0x7F && c != '\\') out[at++] = (char)c;
        else at += (size_t)snprintf(out + at, size - at, "\\x%02X", (unsigned)c);
    }
    out[at] = '\0';
    return out;
}

static void print_info(const em_model *model, const char *path, size_t file_bytes)
{
    char safe[256];
    uint32_t i;
    printf("model: %s (%zu bytes), format version %u, context %zu bytes\n", path, file_bytes,
           (unsigned)em_model_format_version(model), em_context_size(model));
    /* the peak of a run: values reused by liveness across branches, against all values held at once */
    printf("activation arena: %zu bytes peak (all node outputs without reuse: %zu bytes)\n",
           em_model_arena_bytes(model), em_model_values_bytes(model));
    printf("tasks: %u\n", (unsigned)em_model_task_count(model));
    for (i = 0; i < em_model_task_count(model); ++i) {
        em_task_info t;
        em_model_task_info(model, i, &t);
        printf("  %u %s: input %u (%u, %u, %u), classes %u\n", (unsigned)i, safe_name(t.name, safe, sizeof safe), (unsigned)t.input_index,
               (unsigned)t.input_h, (unsigned)t.input_w, (unsigned)t.input_c, (unsigned)t.classes);
    }
    printf("nodes: %u\n", (unsigned)em_model_node_count(model));
    printf("  %4s  %-28s %-17s %-16s %-10s %s\n", "#", "name", "op", "output", "r/C", "kernel");
    for (i = 0; i < em_model_node_count(model); ++i) {
        em_node_info n;
        char shape[48], rc[24];
        em_model_node_info(model, i, &n);
        snprintf(shape, sizeof shape, "(%u, %u, %u)", (unsigned)n.out_h, (unsigned)n.out_w, (unsigned)n.out_c);
        if (n.codewords != 0)
            snprintf(rc, sizeof rc, "%u/%u", (unsigned)n.seg_len, (unsigned)n.codewords);
        else
            snprintf(rc, sizeof rc, "-");
        printf("  %4u  %-28s %-17s %-16s %-10s %s", (unsigned)i, n.name[0] ? safe_name(n.name, safe, sizeof safe) : "-", em_op_name(n.op), shape,
               rc, n.kernel);
        if (n.input_count > 1) { /* branches join here: name every value read */
            uint32_t k, v = 0;
            printf("  inputs");
            for (k = 0; k < n.input_count; ++k) {
                em_model_node_input(model, i, k, &v);
                printf(" %u", (unsigned)v);
            }
        }
        printf("\n");
    }
    printf("cpu features: %s\n", em_runtime_cpu_features());
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

int main(int argc, char **argv)
{
    options o;
    resources r;
    em_error err;
    em_status st;
    unsigned char *model_data = NULL;
    size_t model_size = 0, context_bytes, input_floats, input_bytes = 0;
    em_context *ctx = NULL;
    em_task_info info;
    uint32_t task = 0;
    char why[256];
    void *input_block = NULL;
    unsigned char *input_data = NULL;
    long i;

    memset(&r, 0, sizeof r);
    if (!parse_options(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    if (!read_file_aligned(o.model_path, &r.model_block, &model_data, &model_size, why, sizeof why))
        return fail(&r, "%s: %s", o.model_path, why);
    st = em_model_load(model_data, model_size, NULL, &r.model, &err);
    if (st != EM_STATUS_OK) return fail(&r, "%s: %s: %s", o.model_path, em_status_name(st), err.message);
    if (o.info) print_info(r.model, o.model_path, model_size);
    if (o.task == NULL) {
        release_all(&r);
        return 0;
    }

    if (!resolve_task(r.model, o.task, &task)) {
        uint32_t t;
        fprintf(stderr, "em_run: error: %s: no task named or numbered '%s'; tasks:", o.model_path, o.task);
        for (t = 0; t < em_model_task_count(r.model); ++t) {
            em_model_task_info(r.model, t, &info);
            fprintf(stderr, " %u=%s", (unsigned)t, info.name);
        }
        fputc('\n', stderr);
        release_all(&r);
        return 1;
    }
    em_model_task_info(r.model, task, &info);
    input_floats = (size_t)info.input_h * info.input_w * info.input_c;

    if (!read_file_aligned(o.input_path, &input_block, &input_data, &input_bytes, why, sizeof why)) {
        free(input_block);
        return fail(&r, "input %s: %s", o.input_path, why);
    }
    r.input = (float *)malloc(input_bytes ? input_bytes : 1);
    if (r.input != NULL) memcpy(r.input, input_data, input_bytes);
    free(input_block);
    if (r.input == NULL) return fail(&r, "input %s: out of memory", o.input_path);
    if (input_bytes % sizeof(float) != 0)
        return fail(&r, "input %s has %zu bytes, not a whole number of float32 values", o.input_path, input_bytes);
    if (input_bytes / sizeof(float) != input_floats)
        return fail(&r, "input %s has %zu floats, task %s expects %u" TIMES "%u" TIMES "%u = %zu", o.input_path,
                    input_bytes / sizeof(float), info.name, (unsigned)info.input_h, (unsigned)info.input_w,
                    (unsigned)info.input_c, input_floats);

    context_bytes = em_context_size(r.model);
    r.context_memory = malloc(context_bytes);
    r.output = (float *)malloc((size_t)info.classes * sizeof(float));
    r.times_ms = (double *)malloc((size_t)o.runs * sizeof(double));
    if (r.context_memory == NULL || r.output == NULL || r.times_ms == NULL)
        return fail(&r, "out of memory (context %zu bytes)", context_bytes);
    st = em_context_init(r.model, r.context_memory, context_bytes, &ctx, &err);
    if (st != EM_STATUS_OK) return fail(&r, "%s: %s", em_status_name(st), err.message);

    for (i = 0; i < o.runs; ++i) {
        const double start = now_ms();
        st = em_run_task(ctx, task, r.input, input_floats, r.output, info.classes, &err);
        r.times_ms[i] = now_ms() - start;
        if (st != EM_STATUS_OK) return fail(&r, "task %s: %s: %s", info.name, em_status_name(st), err.message);
    }
    if (!em_file_write(o.output_path, r.output, (size_t)info.classes * sizeof(float), why, sizeof why))
        return fail(&r, "output %s: %s", o.output_path, why);

    if (o.timing) {
        for (i = 0; i < o.runs; ++i) printf("run %ld: %.3f ms\n", i + 1, r.times_ms[i]);
        qsort(r.times_ms, (size_t)o.runs, sizeof(double), compare_doubles);
        printf("task %s: %ld runs, median %.3f ms, min %.3f ms\n", info.name, o.runs,
               o.runs % 2 ? r.times_ms[o.runs / 2] : 0.5 * (r.times_ms[o.runs / 2 - 1] + r.times_ms[o.runs / 2]),
               r.times_ms[0]);
    }
    release_all(&r);
    return 0;
}
