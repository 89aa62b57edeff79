/* The em_run tool end to end: --info, running a task by name and by index, --runs, and a clear error
 * with a non-zero exit for every failure (bad input size, missing or corrupt model, unknown task,
 * usage mistakes). Usage: em_test_em_run PATH_TO_EM_RUN (CTest passes it; files go to the cwd). */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "em_test_builder.h"
#include "em_test_util.h"

static const char *g_em_run;

/* Runs `em_run ARGS > em_run_test.out 2> em_run_test.err`; returns the exit code (-1: did not run). */
static int em_run(const char *args)
{
    char command[1024];
    int rc;
    snprintf(command, sizeof command, "'%s' %s > em_run_test.out 2> em_run_test.err", g_em_run, args);
    rc = system(command);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

static char *read_text(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    char *text;
    size_t n = 0, cap = 4096;
    if (f == NULL) return NULL;
    text = (char *)malloc(cap + 1);
    for (;;) {
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        text = (char *)realloc(text, cap + 1);
    }
    fclose(f);
    text[n] = '\0';
    if (size) *size = n;
    return text;
}

static int file_contains(const char *path, const char *needle)
{
    char *text = read_text(path, NULL);
    int found = text != NULL && strstr(text, needle) != NULL;
    if (!found) fprintf(stderr, "%s does not contain \"%s\":\n%s\n", path, needle, text ? text : "(missing)");
    free(text);
    return found;
}

/* em_run --output OUTPUT (task cls of the test model) exits 1 with `message` on stderr. */
static void expect_output_refused(const char *output, const char *message)
{
    char args[256];
    snprintf(args, sizeof args, "em_run_test.emm --task cls --input em_run_test_in.f32 --output %s", output);
    CHECKF(em_run(args) == 1, "em_run --output %s: expected exit status 1", output);
    CHECKF(file_contains("em_run_test.err", message), "em_run --output %s: stderr lacks \"%s\"", output, message);
}

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t *build_model(size_t *size)
{
    const uint32_t cb_dims[3] = {1, 3, 2}, idx_dims[4] = {3, 3, 1, 4};
    float cb[6], w[12], w2[8];
    uint32_t idx[36], i, in, v, gap;
    emb_builder *b = emb_create();
    emb_node n;
    uint8_t *file;
    em_test_rng rng;
    em_test_rng_seed(&rng, 51);
    em_test_fill(&rng, cb, 6, 1.0f);
    em_test_fill(&rng, w, 12, 1.0f);
    em_test_fill(&rng, w2, 8, 1.0f);
    for (i = 0; i < 36; ++i) idx[i] = em_test_rand_below(&rng, 3);
    emb_meta_string(b, "node.0.name", "trunk/lut_conv");
    in = emb_input(b, 4, 4, 2);
    n = emb_node_init(EM_OP_LUT_CONV2D, in);
    n.kernel_h = n.kernel_w = 3;
    n.pad_top = n.pad_left = n.pad_bottom = n.pad_right = 1;
    n.seg_len = 2;
    n.codewords = 3;
    n.activation = EM_ACT_RELU;
    n.weight = emb_tensor_f32(b, 3, cb_dims, cb);
    n.index = emb_tensor_idx(b, 4, idx_dims, 2, idx);
    v = emb_add_op(b, n, 4);
    gap = emb_add_op(b, emb_node_init(EM_OP_GLOBAL_AVG_POOL, v), 0);
    v = emb_add_dense(b, gap, 3, w);
    emb_task_auto(b, "cls", in, v);
    v = emb_add_dense(b, gap, 2, w2);
    emb_task_auto(b, "7", in, v); /* a name made of digits: names win over indices */
    file = emb_finish(b, size);
    emb_destroy(b);
    return file;
}

/* The logits the library computes for task `task`. */
static void expected_logits(const uint8_t *file, size_t size, uint32_t task, const float *x, float *y, size_t ny)
{
    em_model *model = NULL;
    em_context *ctx = NULL;
    em_error err;
    void *memory;
    CHECK(em_model_load(file, size, NULL, &model, &err) == EM_STATUS_OK);
    memory = malloc(em_context_size(model));
    CHECK(em_context_init(model, memory, em_context_size(model), &ctx, &err) == EM_STATUS_OK);
    CHECK(em_run_task(ctx, task, x, 32, y, ny, &err) == EM_STATUS_OK);
    free(memory);
    em_model_free(model);
}

static void check_output(const char *path, const float *want, size_t n)
{
    size_t size = 0;
    char *got = read_text(path, &size);
    CHECKF(got != NULL && size == n * sizeof(float), "%s: %zu bytes, expected %zu", path, size, n * sizeof(float));
    if (got != NULL && size == n * sizeof(float)) CHECK(memcmp(got, want, size) == 0);
    free(got);
}

int main(int argc, char **argv)
{
    size_t size;
    uint8_t *file;
    float x[32], bad[10], want_cls[3], want_7[2];
    em_test_rng rng;
    FILE *tmp;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH_TO_EM_RUN\n", argv[0]);
        return 2;
    }
    g_em_run = argv[1];
    file = build_model(&size);
    em_test_rng_seed(&rng, 52);
    em_test_fill(&rng, x, 32, 1.0f);
    em_test_fill(&rng, bad, 10, 1.0f);
    write_file("em_run_test.emm", file, size);
    write_file("em_run_test_in.f32", x, sizeof x);
    write_file("em_run_test_bad.f32", bad, sizeof bad);
    expected_logits(file, size, 0, x, want_cls, 3);
    expected_logits(file, size, 1, x, want_7, 2);
    {
        size_t data_off;
        emb_find_section(file, EM_SECTION_DATA, &data_off, NULL);
        file[data_off + 1] ^= 0x10; /* a flipped bit in DATA */
        write_file("em_run_test_corrupt.emm", file, size);
    }
    remove("em_run_test_out.f32");

    CHECK(em_run("em_run_test.emm --info") == 0);
    CHECK(file_contains("em_run_test.out", "format version 1"));
    CHECK(file_contains("em_run_test.out", "0 cls: input 0 (4, 4, 2), classes 3"));
    CHECK(file_contains("em_run_test.out", "trunk/lut_conv"));
    CHECK(file_contains("em_run_test.out", "LUT_CONV2D"));
    CHECK(file_contains("em_run_test.out", "2/3"));
    CHECK(file_contains("em_run_test.out", "lut_conv2d_")); /* the fastest kernel set this CPU has */
    CHECK(file_contains("em_run_test.out", "cpu features: "));
    CHECK(file_contains("em_run_test.out", "kernels: "));
    CHECK(file_contains("em_run_test.out", "activation arena: ")); /* the peak of a run, and the no-reuse sum */
    CHECK(file_contains("em_run_test.out", " bytes peak (all node outputs without reuse: "));
    { /* a v2 model: the join's inputs are listed */
        emb_builder *b = emb_create();
        const uint32_t in = emb_input(b, 2, 3, 4);
        uint32_t values[2];
        uint8_t *v2;
        size_t v2_size;
        values[0] = emb_add_op(b, emb_node_init(EM_OP_ACTIVATION, in), 0);
        values[1] = in;
        emb_task_auto(b, "join", in, emb_add_multi(b, EM_OP_ADD, values, 2, EM_ACT_RELU));
        v2 = emb_finish(b, &v2_size);
        write_file("em_run_test_v2.emm", v2, v2_size);
        CHECK(em_run("em_run_test_v2.emm --info") == 0);
        CHECK(file_contains("em_run_test.out", "format version 2"));
        CHECK(file_contains("em_run_test.out", "ADD"));
        CHECK(file_contains("em_run_test.out", "inputs 1 0"));
        remove("em_run_test_v2.emm");
        free(v2);
        emb_destroy(b);
    }

    CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32 --output em_run_test_out.f32") == 0);
    check_output("em_run_test_out.f32", want_cls, 3);
    tmp = fopen("em_run_test_out.f32.tmp", "rb");
    CHECKF(tmp == NULL, "the temporary output file was left behind");
    if (tmp) fclose(tmp);
    CHECK(em_run("em_run_test.emm --task 7 --input em_run_test_in.f32 --output em_run_test_out.f32") == 0);
    check_output("em_run_test_out.f32", want_7, 2); /* the task named "7", not index 7 */
    CHECK(em_run("--task 0 --output em_run_test_out.f32 em_run_test.emm --input em_run_test_in.f32") == 0);
    check_output("em_run_test_out.f32", want_cls, 3); /* index 0, options in any order */
    CHECK(em_run("em_run_test.emm --task 1 --input em_run_test_in.f32 --output em_run_test_out.f32 --runs 3 --info") ==
          0);
    check_output("em_run_test_out.f32", want_7, 2);
    CHECK(file_contains("em_run_test.out", "run 3: "));
    CHECK(file_contains("em_run_test.out", "median"));
    CHECK(file_contains("em_run_test.out", "cpu features: "));

    /* failures: a message on stderr and a non-zero exit */
    CHECK(em_run("em_run_test.emm --task cls --input em_run_test_bad.f32 --output em_run_test_out.f32") == 1);
    CHECK(file_contains("em_run_test.err",
                        "input em_run_test_bad.f32 has 10 floats, task cls expects 4\xC3\x97"
                        "4\xC3\x97"
                        "2 = 32"));
    CHECK(em_run("no_such_model.emm --info") == 1);
    CHECK(file_contains("em_run_test.err", "no_such_model.emm: "));
    CHECK(em_run("em_run_test_corrupt.emm --info") == 1);
    CHECK(file_contains("em_run_test.err", "em_run_test_corrupt.emm: bad CRC: section 4 (DATA): CRC mismatch"));
    CHECK(em_run("em_run_test_in.f32 --info") == 1); /* not a model at all */
    CHECK(file_contains("em_run_test.err", "bad magic"));
    CHECK(em_run("em_run_test.emm --task dog --input em_run_test_in.f32 --output em_run_test_out.f32") == 1);
    CHECK(file_contains("em_run_test.err", "no task named or numbered 'dog'; tasks: 0=cls 1=7"));
    CHECK(em_run("em_run_test.emm --task cls --input missing.f32 --output em_run_test_out.f32") == 1);
    CHECK(file_contains("em_run_test.err", "input missing.f32: "));
    CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32 --output no_such_dir/out.f32") == 1);
    CHECK(file_contains("em_run_test.err", "cannot create no_such_dir/out.f32.tmp"));
    CHECK(em_run("") == 2);
    CHECK(file_contains("em_run_test.err", "usage: em_run MODEL"));
    CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32") == 2);
    CHECK(file_contains("em_run_test.err", "needs --task, --input and --output"));
    CHECK(em_run("em_run_test.emm --runs 0 --info") == 2);
    CHECK(em_run("em_run_test.emm --frobnicate") == 2);
    CHECK(file_contains("em_run_test.err", "unknown option --frobnicate"));

    /* node names with ESC, CR and LF are printed escaped by --info: a file cannot forge output lines */
    {
        emb_builder *b = emb_create();
        uint32_t in2 = emb_input(b, 1, 1, 4), v2;
        emb_node n2 = emb_node_init(EM_OP_ACTIVATION, in2);
        size_t evil_size;
        uint8_t *evil;
        n2.activation = EM_ACT_RELU;
        v2 = emb_add_op(b, n2, 0);
        emb_task_auto(b, "t", in2, v2);
        emb_meta_string(b, "node.0.name", "evil\x1b[2J\r\nmodel: forged\\");
        evil = emb_finish(b, &evil_size);
        emb_destroy(b);
        write_file("em_run_test_names.emm", evil, evil_size);
        free(evil);
        CHECK(em_run("em_run_test_names.emm --info") == 0);
        CHECK(file_contains("em_run_test.out", "evil\\x1B[2J\\x0D\\x0Amodel: forged\\x5C"));
        {
            char *text = read_text("em_run_test.out", NULL);
            CHECKF(text != NULL && strchr(text, '\x1b') == NULL && strchr(text, '\r') == NULL &&
                       strstr(text, "\nmodel: forged") == NULL,
                   "raw control bytes in --info output");
            free(text);
        }
    }

    /* output files: never through a planted symlink at the old fixed temporary name, never over a symlink,
     * FIFO or directory, the old file's mode kept */
    {
        struct stat st;
        char *victim;
        remove("em_run_test_victim.txt");
        write_file("em_run_test_victim.txt", "precious", 8);
        remove("em_run_test_out.f32.tmp");
        CHECK(symlink("em_run_test_victim.txt", "em_run_test_out.f32.tmp") == 0);
        CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32 --output em_run_test_out.f32") == 0);
        check_output("em_run_test_out.f32", want_cls, 3);
        victim = read_text("em_run_test_victim.txt", NULL);
        CHECKF(victim != NULL && strcmp(victim, "precious") == 0, "the file behind OUT.tmp was overwritten");
        free(victim);
        CHECK(lstat("em_run_test_out.f32.tmp", &st) == 0 && S_ISLNK(st.st_mode));
        remove("em_run_test_out.f32.tmp");

        remove("em_run_test_link.f32");
        CHECK(symlink("em_run_test_victim.txt", "em_run_test_link.f32") == 0);
        expect_output_refused("em_run_test_link.f32", "em_run_test_link.f32: is a symbolic link");
        CHECK(lstat("em_run_test_link.f32", &st) == 0 && S_ISLNK(st.st_mode));
        remove("em_run_test_link.f32");

        remove("em_run_test_fifo");
        CHECK(mkfifo("em_run_test_fifo", 0600) == 0);
        expect_output_refused("em_run_test_fifo", "em_run_test_fifo: not a regular file (a FIFO)");
        CHECK(lstat("em_run_test_fifo", &st) == 0 && S_ISFIFO(st.st_mode));
        remove("em_run_test_fifo");

        rmdir("em_run_test_dir");
        CHECK(mkdir("em_run_test_dir", 0700) == 0);
        expect_output_refused("em_run_test_dir", "em_run_test_dir: not a regular file (a directory)");
        rmdir("em_run_test_dir");

        CHECK(chmod("em_run_test_out.f32", 0640) == 0);
        CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32 --output em_run_test_out.f32") == 0);
        CHECK(stat("em_run_test_out.f32", &st) == 0 && (st.st_mode & 0777) == 0640);

        /* a failing write (file size limit 0; also holds for root): reported, target and folder unchanged */
        {
            char command[1200];
            int rc;
            snprintf(command, sizeof command,
                     "sh -c \"trap '' XFSZ; ulimit -f 0; '%s' em_run_test.emm --task 7 --input "
                     "em_run_test_in.f32 --output em_run_test_out.f32; echo exit=\\$? >&2\" 2>&1 >/dev/null "
                     "| cat > em_run_test.err", /* stderr through a pipe: the limit applies to files */
                     g_em_run);
            rc = system(command);
            CHECK(rc != -1 && WIFEXITED(rc));
            CHECK(file_contains("em_run_test.err", "exit=1"));
            CHECK(file_contains("em_run_test.err", "file too large"));
            check_output("em_run_test_out.f32", want_cls, 3);
            CHECK(system("ls -a | grep -q 'em_run_test_out.f32.tmp-'") != 0);
        }
        if (geteuid() == 0) {
            fprintf(stderr, "test_em_run: skipping the read-only folder case (root ignores permission bits)\n");
        } else {
            rmdir("em_run_test_ro");
            CHECK(mkdir("em_run_test_ro", 0500) == 0);
            CHECK(em_run("em_run_test.emm --task cls --input em_run_test_in.f32 --output em_run_test_ro/o.f32") == 1);
            CHECK(file_contains("em_run_test.err", "permission denied"));
            rmdir("em_run_test_ro");
        }
    }

    /* NaN input gives NaN logits (ReLU and the pools keep NaN, FORMAT.md "Non-finite values") */
    {
        float nan_in[32];
        size_t got_size = 0;
        char *got;
        memcpy(nan_in, x, sizeof nan_in);
        nan_in[5] = NAN;
        write_file("em_run_test_nan.f32", nan_in, sizeof nan_in);
        CHECK(em_run("em_run_test.emm --task cls --input em_run_test_nan.f32 --output em_run_test_out.f32") == 0);
        got = read_text("em_run_test_out.f32", &got_size);
        if (CHECK(got != NULL && got_size == 3 * sizeof(float))) {
            float y[3];
            memcpy(y, got, sizeof y);
            CHECKF(isnan(y[0]) && isnan(y[1]) && isnan(y[2]), "NaN input gave %g %g %g", (double)y[0], (double)y[1],
                   (double)y[2]);
        }
        free(got);
    }

    free(file);
    return em_test_summary("test_em_run");
}
