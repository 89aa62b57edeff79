/* em_fuzz_replay FILE|DIR...: runs the fuzzing oracle (em_fuzz_common.h) over files, the way the fuzzer
 * would, without libFuzzer: ctest replays the seed corpus and every regression found by fuzzing with it
 * (under the sanitizer build too). Exits non-zero if a path cannot be read or the corpus is empty; any
 * broken contract aborts. --expect-valid N: at least N of the files must load as given. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "em_fuzz_common.h"

static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        if (f) fclose(f);
        return 0;
    }
    *size = (size_t)n;
    *data = (uint8_t *)malloc(*size ? *size : 1);
    if (*data == NULL || fread(*data, 1, *size, f) != *size) {
        fclose(f);
        free(*data);
        return 0;
    }
    fclose(f);
    return 1;
}

static int replay_file(const char *path, em_fuzz_stats *stats)
{
    uint8_t *data;
    size_t size;
    if (!read_file(path, &data, &size)) {
        fprintf(stderr, "em_fuzz_replay: cannot read %s\n", path);
        return 0;
    }
    fprintf(stderr, "em_fuzz_replay: %s (%zu bytes)\n", path, size); /* names the culprit if it aborts */
    em_fuzz_one(data, size, stats);
    free(data);
    return 1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int replay_path(const char *path, em_fuzz_stats *stats)
{
    struct stat st;
    DIR *dir;
    struct dirent *e;
    char **names = NULL;
    size_t count = 0, cap = 0, i;
    int ok = 1;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "em_fuzz_replay: no such file or folder: %s\n", path);
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return replay_file(path, stats);
    dir = opendir(path);
    if (dir == NULL) return 0;
    while ((e = readdir(dir)) != NULL) {
        size_t len;
        if (e->d_name[0] == '.') continue; /* ., .., and dot files such as .gitkeep */
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            names = (char **)realloc(names, cap * sizeof *names);
            if (names == NULL) return 0;
        }
        len = strlen(path) + strlen(e->d_name) + 2;
        names[count] = (char *)malloc(len);
        snprintf(names[count], len, "%s/%s", path, e->d_name);
        ++count;
    }
    closedir(dir);
    if (count > 1) qsort(names, count, sizeof *names, cmp_names); /* the same order on every machine */
    for (i = 0; i < count; ++i) {
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) ok &= replay_file(names[i], stats);
        free(names[i]);
    }
    free(names);
    return ok;
}

int main(int argc, char **argv)
{
    em_fuzz_stats stats;
    unsigned long expect_valid = 0;
    int i, ok = 1;
    memset(&stats, 0, sizeof stats);
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--expect-valid") == 0 && i + 1 < argc) {
            expect_valid = strtoul(argv[++i], NULL, 10);
            continue;
        }
        ok &= replay_path(argv[i], &stats);
    }
    em_fuzz_print_stats("em_fuzz_replay", &stats);
    if (stats.inputs == 0) {
        fprintf(stderr, "em_fuzz_replay: no input files\n");
        return 1;
    }
    if (stats.loaded_raw < expect_valid) {
        fprintf(stderr, "em_fuzz_replay: %llu files loaded, expected at least %lu\n",
                (unsigned long long)stats.loaded_raw, expect_valid);
        return 1;
    }
    return ok ? 0 : 1;
}
