/* Writing an output file safely (POSIX): every file em_run writes goes through em_file_write. */
#ifndef EDGEMERGE_EM_FILE_OUT_H
#define EDGEMERGE_EM_FILE_OUT_H

#include <stddef.h>

/* Writes `bytes` to `path` atomically: a temporary PATH.tmp-XXXXXXXX created in the same folder with
 * O_CREAT|O_EXCL|O_NOFOLLOW (random name, the old file's mode when replacing one, else 0666 & ~umask),
 * written, fsync'ed, renamed over `path`, then the folder fsync'ed. Refuses a `path` that is a symbolic
 * link or not a regular file (device, directory, FIFO). On failure removes exactly the temporary it
 * created and returns 0 with the reason in `why` ("disk full", "read-only file system", "permission
 * denied", ...). */
int em_file_write(const char *path, const void *data, size_t bytes, char *why, size_t why_size);

#endif /* EDGEMERGE_EM_FILE_OUT_H */
