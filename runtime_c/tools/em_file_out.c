/* See em_file_out.h. */
#define _POSIX_C_SOURCE 200809L

#include "em_file_out.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *reason(int e)
{
    switch (e) {
    case ENOSPC: return "disk full";
#ifdef EDQUOT
    case EDQUOT: return "disk quota exceeded";
#endif
    case EROFS: return "read-only file system";
    case EACCES:
    case EPERM: return "permission denied";
    case EFBIG: return "file too large";
    default: return strerror(e);
    }
}

static const char *kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

static uint64_t random_bits(void)
{
    uint64_t r = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &r, sizeof r) != (ssize_t)sizeof r) r = 0;
        close(fd);
    }
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r ^= (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15u ^ (uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_sec;
    }
    return r;
}

/* The folder holding path ("." when it has no slash), malloc'd. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash == NULL ? 1 : (slash == path ? 1 : (size_t)(slash - path));
    char *dir = (char *)malloc(len + 1);
    if (dir == NULL) return NULL;
    if (slash == NULL) memcpy(dir, ".", 1);
    else memcpy(dir, slash == path ? "/" : path, len);
    dir[len] = '\0';
    return dir;
}

int em_file_write(const char *path, const void *data, size_t bytes, char *why, size_t why_size)
{
    struct stat st;
    mode_t mode = 0666; /* open() applies the umask */
    int replacing = 0, fd = -1, attempt, e;
    size_t tmp_size = strlen(path) + 32, done = 0;
    char *tmp = (char *)malloc(tmp_size), *dir;

    if (tmp == NULL) {
        snprintf(why, why_size, "out of memory");
        return 0;
    }
    if (lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            snprintf(why, why_size, "is a symbolic link; refusing to replace it (give the file it points to)");
            free(tmp);
            return 0;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(why, why_size, "not a regular file (%s); refusing to replace it", kind(st.st_mode));
            free(tmp);
            return 0;
        }
        replacing = 1;
        mode = st.st_mode & 0777;
    } else if (errno != ENOENT) {
        snprintf(why, why_size, "cannot check it: %s", reason(errno));
        free(tmp);
        return 0;
    }
    for (attempt = 0; attempt < 100 && fd < 0; ++attempt) {
        snprintf(tmp, tmp_size, "%s.tmp-%08lx", path, (unsigned long)(random_bits() & 0xFFFFFFFFu));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        snprintf(why, why_size, "cannot create %s (%s)", tmp, reason(errno));
        free(tmp);
        return 0;
    }
    if (replacing && fchmod(fd, mode) != 0) { /* the old mode exactly, whatever the umask */
        e = errno;
        goto fail_open;
    }
    while (done < bytes) {
        ssize_t n = write(fd, (const char *)data + done, bytes - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            e = errno;
            goto fail_open;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        e = errno;
        goto fail_open;
    }
    if (close(fd) != 0) {
        e = errno;
        fd = -1;
        goto fail_closed;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        snprintf(why, why_size, "cannot rename %s to it (%s)", tmp, reason(e));
        unlink(tmp);
        free(tmp);
        return 0;
    }
    dir = folder_of(path);
    if (dir != NULL) { /* the rename itself survives a crash */
        int dfd = open(dir, O_RDONLY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); /* some file systems refuse fsync on a folder: the data is written anyway */
            close(dfd);
        }
        free(dir);
    }
    free(tmp);
    return 1;

fail_open:
    close(fd);
fail_closed:
    snprintf(why, why_size, "cannot write %s (%s)", tmp, reason(e));
    unlink(tmp);
    free(tmp);
    return 0;
}
