/* em_run: load an .emm model and run one task on a raw float32 or .npy input file, or time every task.
 *
 *   em_run MODEL --task T --input IN.f32|IN.npy --output OUT.f32 [--runs N] [--warmup W] [--threads K] [--json]
 *   em_run MODEL --task all [--runs N] [--warmup W] [--threads K] [--json]
 *   em_run MODEL --info
 *
 * IN.f32 holds the task's input (H×W×C little-endian float32, NHWC); IN.npy a float32 C-order array of
 * shape [N,H,W,C] or [H,W,C] (N samples, run one after the other: a "run" is all of them). OUT.f32
 * receives the logits, N×classes floats (written to a new OUT.f32.tmp-XXXXXXXX, then renamed:
 * tools/em_file_out.h). --task is a task name or index, or `all`: em_run_all on a fixed deterministic input
 * per graph input (timing only, nothing written), then every task alone, each timed. --threads K (K > 1)
 * loads the model with EM_LOAD_PARALLEL_TASKS and runs em_run_all's task lanes on a pool of K workers.
 * --json prints the timings as one JSON object on stdout (for `edgemerge bench --on`). Every failure
 * prints one message on stderr and exits non-zero: 1 for a runtime or file problem, 2 for a usage mistake. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <errno.h>
#include <math.h>
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
    long warmup;   /* untimed runs first */
    long threads;  /* pool workers; 1: no pool */
    int timing;    /* --runs given: print the times */
    int json;
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
    em_pool *pool;
    float *all_inputs[EM_MAX_TASKS];
    float *all_outputs[EM_MAX_TASKS];
} resources;

static void release_all(resources *r)
{
    unsigned k;
    for (k = 0; k < EM_MAX_TASKS; ++k) {
        free(r->all_inputs[k]);
        free(r->all_outputs[k]);
    }
    em_pool_free(r->pool);
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
    fputs("usage: em_run MODEL --task T --input IN.f32|IN.npy --output OUT.f32 [--runs N] [--warmup W]\n"
          "                    [--threads K] [--json] [--info]\n"
          "       em_run MODEL --task all [--runs N] [--warmup W] [--threads K] [--json]\n"
          "       em_run MODEL --info\n"
          "  MODEL         an .emm file\n"
          "  --task T      task name or index; `all`: time em_run_all and every task on a fixed input\n"
          "  --input IN    raw little-endian float32 input, H" TIMES "W" TIMES "C values (NHWC), or a .npy float32\n"
          "                C-order array of shape [N,H,W,C] or [H,W,C]\n"
          "  --output OUT  raw float32 logits, N" TIMES "classes (a regular file; written to a temporary, then renamed)\n"
          "  --runs N      run N times, print each run's time and the median (ms)\n"
          "  --warmup W    W untimed runs first\n"
          "  --threads K   K workers for em_run_all's task lanes (1: serial, the default)\n"
          "  --json        print the timings as one JSON object\n"
          "  --info        print the format version, tasks, nodes and CPU features\n",
          to);
}

static int parse_options(int argc, char **argv, options *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->runs = 1;
    o->threads = 1;
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
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        } else if (strcmp(a, "--runs") == 0 || strcmp(a, "--warmup") == 0 || strcmp(a, "--threads") == 0) {
            char *end;
            long *target = a[2] == 'r' ? &o->runs : (a[2] == 'w' ? &o->warmup : &o->threads);
            const long low = a[2] == 'w' ? 0 : 1, high = a[2] == 't' ? (long)EM_MAX_THREADS : 1000000;
            if (i + 1 >= argc) {
                fprintf(stderr, "em_run: error: %s needs a value\n", a);
                return 0;
            }
            errno = 0;
            *target = strtol(argv[++i], &end, 10);
            if (a[2] == 'r') o->timing = 1;
            if (errno != 0 || *end != '\0' || *target < low || *target > high) {
                fprintf(stderr, "em_run: error: %s %s: expected a whole number in %ld..%ld\n", a, argv[i], low, high);
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
    if (o->task != NULL && strcmp(o->task, "all") == 0) {
        if (o->input_path || o->output_path) {
            fprintf(stderr, "em_run: error: --task all runs a fixed input per graph input: no --input or --output\n");
            return 0;
        }
    } else if (!o->info || o->task || o->input_path || o->output_path) {
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
    printf("packed kernel data: %zu bytes (allocated at load: decoded weights, unpacked indices)\n",
           em_model_packed_bytes(model));
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

/* A .npy file (NumPy format 1.0/2.0/3.0): accepts only float32 little-endian ('<f4'), C order, shape
 * [N,H,W,C] or [H,W,C] whose H, W, C equal the task's input; *samples = N (1 for 3 dims) and *floats points
 * into data. Anything else gets a message naming what the file holds. */
static int parse_npy(const unsigned char *data, size_t size, const em_task_info *info, const unsigned char **floats,
                     size_t *samples, char *why, size_t why_size)
{
    size_t header_len, at, dims[8], ndim = 0, k, need;
    const char *h, *descr, *fortran, *shape;
    char header[4096];
    if (size < 10 || memcmp(data, "\x93NUMPY", 6) != 0) {
        snprintf(why, why_size, "not a .npy file (no \\x93NUMPY magic)");
        return 0;
    }
    if (data[6] == 1) {
        header_len = (size_t)data[8] | (size_t)data[9] << 8;
        at = 10;
    } else if ((data[6] == 2 || data[6] == 3) && size >= 12) {
        header_len = (size_t)data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 | (size_t)data[11] << 24;
        at = 12;
    } else {
        snprintf(why, why_size, ".npy format version %u is not supported", (unsigned)data[6]);
        return 0;
    }
    if (header_len >= sizeof header || header_len > size - at) {
        snprintf(why, why_size, ".npy header of %zu bytes is truncated or too long", header_len);
        return 0;
    }
    memcpy(header, data + at, header_len);
    header[header_len] = '\0';
    h = header;
    descr = strstr(h, "'descr':");
    fortran = strstr(h, "'fortran_order':");
    shape = strstr(h, "'shape':");
    if (descr == NULL || fortran == NULL || shape == NULL) {
        snprintf(why, why_size, ".npy header lacks descr, fortran_order or shape");
        return 0;
    }
    descr += 8;
    while (*descr == ' ') ++descr;
    if (strncmp(descr, "'<f4'", 5) != 0) {
        const char *end = strchr(descr + 1, '\'');
        snprintf(why, why_size, "dtype %.*s: em_run reads float32 ('<f4') arrays only; convert with "
                 "x.astype(np.float32)", end != NULL ? (int)(end - descr + 1) : 8, descr);
        return 0;
    }
    fortran += 16;
    while (*fortran == ' ') ++fortran;
    if (strncmp(fortran, "False", 5) != 0) {
        snprintf(why, why_size, "a Fortran-order array: em_run reads C-order arrays only (np.ascontiguousarray)");
        return 0;
    }
    shape = strchr(shape, '(');
    if (shape == NULL) {
        snprintf(why, why_size, ".npy header has no shape tuple");
        return 0;
    }
    ++shape;
    for (;;) {
        char *end;
        unsigned long long d;
        while (*shape == ' ' || *shape == ',') ++shape;
        if (*shape == ')') break;
        errno = 0;
        d = strtoull(shape, &end, 10);
        if (end == shape || errno != 0 || ndim == 8 || d > (unsigned long long)SIZE_MAX) {
            snprintf(why, why_size, ".npy shape is not a tuple of at most 8 sizes");
            return 0;
        }
        dims[ndim++] = (size_t)d;
        shape = end;
    }
    if (ndim != 3 && ndim != 4) {
        snprintf(why, why_size, "shape has %zu dimensions: expected [N,H,W,C] or [H,W,C]", ndim);
        return 0;
    }
    k = ndim - 3;
    if (dims[k] != info->input_h || dims[k + 1] != info->input_w || dims[k + 2] != info->input_c) {
        snprintf(why, why_size, "samples of shape [%zu,%zu,%zu], task %s expects [%u,%u,%u]", dims[k], dims[k + 1],
                 dims[k + 2], info->name, (unsigned)info->input_h, (unsigned)info->input_w, (unsigned)info->input_c);
        return 0;
    }
    *samples = ndim == 4 ? dims[0] : 1;
    at += header_len;
    need = (size_t)info->input_h * info->input_w * info->input_c;
    if (*samples == 0 || need > (size - at) / sizeof(float) / *samples) {
        snprintf(why, why_size, "%zu samples declared, the file holds %zu data bytes", *samples, size - at);
        return 0;
    }
    if (*samples * need * sizeof(float) != size - at) {
        snprintf(why, why_size, "%zu data bytes, the shape declares %zu", size - at, *samples * need * sizeof(float));
        return 0;
    }
    *floats = data + at; /* copied out: the format aligns data to 64 bytes (16 in 1.0), never trusted */
    return 1;
}

typedef struct timing {
    double first, min, median, p95, mean, std;
} timing;

/* Sorts times[] (the first value is kept in t->first before) */
static void summarize(double *times, long n, double first, timing *t)
{
    long i;
    double sum = 0.0, sq = 0.0;
    t->first = first;
    for (i = 0; i < n; ++i) sum += times[i];
    t->mean = sum / (double)n;
    for (i = 0; i < n; ++i) sq += (times[i] - t->mean) * (times[i] - t->mean);
    t->std = n > 1 ? sqrt(sq / (double)(n - 1)) : 0.0;
    qsort(times, (size_t)n, sizeof(double), compare_doubles);
    t->min = times[0];
    t->median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    t->p95 = times[(long)((double)(n - 1) * 0.95 + 0.5)]; /* nearest rank */
}

static void print_timing_json(const char *key, const timing *t, long runs)
{
    printf("\"%s\": {\"runs\": %ld, \"first_ms\": %.6f, \"min_ms\": %.6f, \"median_ms\": %.6f, \"p95_ms\": %.6f, "
           "\"mean_ms\": %.6f, \"std_ms\": %.6f}", key, runs, t->first, t->min, t->median, t->p95, t->mean, t->std);
}

static void print_json_string(const char *text)
{
    putchar('"');
    for (; *text != '\0'; ++text) {
        const unsigned char c = (unsigned char)*text;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7F) printf("\\u%04x", (unsigned)c);
        else putchar(c);
    }
    putchar('"');
}

static void print_json_head(const em_model *model, const options *o, double load_ms)
{
    printf("{\"em_run\": 1, \"kernels\": \"%s\", \"cpu_features\": ", em_kernels_name(em_model_kernels(model)));
    print_json_string(em_runtime_cpu_features());
    printf(", \"threads\": %ld, \"task_lanes\": %u, \"warmup\": %ld, \"load_ms\": %.6f, \"context_bytes\": %zu, "
           "\"packed_bytes\": %zu, ",
           o->threads, (unsigned)em_model_task_lanes(model), o->warmup, load_ms, em_context_size(model),
           em_model_packed_bytes(model));
}

/* --task all: em_run_all on fixed inputs (a deterministic pattern in [-1, 1)), then each task alone. */
static int run_all_tasks(resources *r, const options *o, em_context *ctx, double load_ms)
{
    const uint32_t tasks = em_model_task_count(r->model), inputs = em_model_input_count(r->model);
    timing all, each[EM_MAX_TASKS];
    em_error err;
    uint32_t t, v;
    long i;
    for (v = 0; v < inputs; ++v) {
        uint32_t h, w, c;
        size_t k, n;
        em_model_input_shape(r->model, v, &h, &w, &c);
        n = (size_t)h * w * c;
        r->all_inputs[v] = (float *)malloc((n ? n : 1) * sizeof(float));
        if (r->all_inputs[v] == NULL) return fail(r, "out of memory for input %u", (unsigned)v);
        for (k = 0; k < n; ++k) r->all_inputs[v][k] = (float)((k * 2654435761u + v) % 2048u) / 1024.0f - 1.0f;
    }
    for (t = 0; t < tasks; ++t) {
        em_task_info info;
        em_model_task_info(r->model, t, &info);
        r->all_outputs[t] = (float *)malloc((info.classes ? info.classes : 1) * sizeof(float));
        if (r->all_outputs[t] == NULL) return fail(r, "out of memory for the outputs");
    }
    for (i = 0; i <= o->warmup + o->runs - 1; ++i) {
        const double start = now_ms();
        em_status st = em_run_all(ctx, (const float *const *)r->all_inputs, (float *const *)r->all_outputs, &err);
        const double took = now_ms() - start;
        if (st != EM_STATUS_OK) return fail(r, "em_run_all: %s: %s", em_status_name(st), err.message);
        if (i == 0) all.first = took;
        if (i >= o->warmup) r->times_ms[i - o->warmup] = took;
    }
    summarize(r->times_ms, o->runs, all.first, &all);
    for (t = 0; t < tasks; ++t) {
        em_task_info info;
        double first = 0.0;
        em_model_task_info(r->model, t, &info);
        for (i = 0; i <= o->warmup + o->runs - 1; ++i) {
            const double start = now_ms();
            em_status st = em_run_task(ctx, t, r->all_inputs[info.input_index],
                                       (size_t)info.input_h * info.input_w * info.input_c, r->all_outputs[t],
                                       info.classes, &err);
            const double took = now_ms() - start;
            if (st != EM_STATUS_OK) return fail(r, "task %s: %s: %s", info.name, em_status_name(st), err.message);
            if (i == 0) first = took;
            if (i >= o->warmup) r->times_ms[i - o->warmup] = took;
        }
        summarize(r->times_ms, o->runs, first, &each[t]);
    }
    if (o->json) {
        print_json_head(r->model, o, load_ms);
        print_timing_json("all", &all, o->runs);
        printf(", \"tasks\": {");
        for (t = 0; t < tasks; ++t) {
            em_task_info info;
            em_model_task_info(r->model, t, &info);
            printf("%s", t ? ", " : "");
            print_timing_json(info.name, &each[t], o->runs); /* loader-checked names: [A-Za-z0-9_.-] */
        }
        printf("}}\n");
    } else {
        printf("all tasks (%ld threads): %ld runs, median %.3f ms, min %.3f ms, p95 %.3f ms\n", o->threads, o->runs,
               all.median, all.min, all.p95);
        for (t = 0; t < tasks; ++t) {
            em_task_info info;
            em_model_task_info(r->model, t, &info);
            printf("task %s: %ld runs, median %.3f ms, min %.3f ms, p95 %.3f ms\n", info.name, o->runs,
                   each[t].median, each[t].min, each[t].p95);
        }
    }
    release_all(r);
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    resources r;
    em_error err;
    em_status st;
    em_load_options load;
    unsigned char *model_data = NULL;
    size_t model_size = 0, context_bytes, input_floats, input_bytes = 0, samples = 1, s;
    em_context *ctx = NULL;
    em_task_info info;
    uint32_t task = 0;
    char why[256];
    void *input_block = NULL;
    unsigned char *input_data = NULL;
    const unsigned char *npy_floats = NULL;
    double load_start, load_ms, first_ms = 0.0;
    long i;
    timing tm;

    memset(&r, 0, sizeof r);
    if (!parse_options(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    if (!read_file_aligned(o.model_path, &r.model_block, &model_data, &model_size, why, sizeof why))
        return fail(&r, "%s: %s", o.model_path, why);
    memset(&load, 0, sizeof load);
    {
        const char *env = getenv("EM_KERNELS"); /* as em_model_load does */
        if (env != NULL && env[0] != '\0' && !em_kernels_from_name(env, &load.kernels))
            return fail(&r, "EM_KERNELS='%s' names no kernel set", env);
    }
    if (o.threads > 1) load.flags = EM_LOAD_PARALLEL_TASKS;
    load_start = now_ms();
    st = em_model_load_ex(model_data, model_size, NULL, &load, &r.model, &err);
    load_ms = now_ms() - load_start;
    if (st != EM_STATUS_OK) return fail(&r, "%s: %s: %s", o.model_path, em_status_name(st), err.message);
    if (o.info) print_info(r.model, o.model_path, model_size);
    if (o.task == NULL) {
        release_all(&r);
        return 0;
    }
    if (o.threads > 1) {
        st = em_pool_create((uint32_t)o.threads, NULL, &r.pool, &err);
        if (st != EM_STATUS_OK) return fail(&r, "--threads %ld: %s: %s", o.threads, em_status_name(st), err.message);
    }
    context_bytes = em_context_size(r.model);
    r.context_memory = malloc(context_bytes);
    r.times_ms = (double *)malloc((size_t)o.runs * sizeof(double));
    if (r.context_memory == NULL || r.times_ms == NULL)
        return fail(&r, "out of memory (context %zu bytes)", context_bytes);
    st = em_context_init(r.model, r.context_memory, context_bytes, &ctx, &err);
    if (st != EM_STATUS_OK) return fail(&r, "%s: %s", em_status_name(st), err.message);
    em_context_set_pool(ctx, r.pool);
    if (strcmp(o.task, "all") == 0) return run_all_tasks(&r, &o, ctx, load_ms);

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
    if (input_bytes >= 6 && memcmp(input_data, "\x93NUMPY", 6) == 0) {
        if (!parse_npy(input_data, input_bytes, &info, &npy_floats, &samples, why, sizeof why)) {
            free(input_block);
            return fail(&r, "input %s: %s", o.input_path, why);
        }
        input_bytes = samples * input_floats * sizeof(float);
        r.input = (float *)malloc(input_bytes);
        if (r.input != NULL) memcpy(r.input, npy_floats, input_bytes);
    } else {
        r.input = (float *)malloc(input_bytes ? input_bytes : 1);
        if (r.input != NULL) memcpy(r.input, input_data, input_bytes);
    }
    free(input_block);
    if (r.input == NULL) return fail(&r, "input %s: out of memory", o.input_path);
    if (input_bytes % sizeof(float) != 0)
        return fail(&r, "input %s has %zu bytes, not a whole number of float32 values", o.input_path, input_bytes);
    if (npy_floats == NULL && input_bytes / sizeof(float) != input_floats)
        return fail(&r, "input %s has %zu floats, task %s expects %u" TIMES "%u" TIMES "%u = %zu", o.input_path,
                    input_bytes / sizeof(float), info.name, (unsigned)info.input_h, (unsigned)info.input_w,
                    (unsigned)info.input_c, input_floats);

    r.output = (float *)malloc(samples * info.classes * sizeof(float) + 1u);
    if (r.output == NULL) return fail(&r, "out of memory for %zu outputs", samples);
    for (i = 0; i <= o.warmup + o.runs - 1; ++i) {
        const double start = now_ms();
        double took;
        for (s = 0; s < samples; ++s) {
            st = em_run_task(ctx, task, r.input + s * input_floats, input_floats, r.output + s * info.classes,
                             info.classes, &err);
            if (st != EM_STATUS_OK) return fail(&r, "task %s: %s: %s", info.name, em_status_name(st), err.message);
        }
        took = now_ms() - start;
        if (i == 0) first_ms = took;
        if (i >= o.warmup) r.times_ms[i - o.warmup] = took;
    }
    if (!em_file_write(o.output_path, r.output, samples * info.classes * sizeof(float), why, sizeof why))
        return fail(&r, "output %s: %s", o.output_path, why);

    if (o.json) {
        print_json_head(r.model, &o, load_ms);
        printf("\"samples\": %zu, ", samples);
        summarize(r.times_ms, o.runs, first_ms, &tm);
        printf("\"tasks\": {");
        print_timing_json(info.name, &tm, o.runs);
        printf("}}\n");
    } else if (o.timing) {
        for (i = 0; i < o.runs; ++i) printf("run %ld: %.3f ms\n", i + 1, r.times_ms[i]);
        summarize(r.times_ms, o.runs, first_ms, &tm);
        printf("task %s: %ld runs, median %.3f ms, min %.3f ms\n", info.name, o.runs, tm.median, tm.min);
    }
    release_all(&r);
    return 0;
}
