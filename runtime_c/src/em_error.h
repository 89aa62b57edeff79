/* Errors: the ground floor every other file of the runtime reports through (em_error.c). Nothing here
 * calls up into the loader, the op table or the executor, so any file may fail with a message.
 *
 * Failures read `return em_fail(err, EM_STATUS_CORRUPT, "...", ...);` at the line that found them. */
#ifndef EDGEMERGE_EM_ERROR_H
#define EDGEMERGE_EM_ERROR_H

#include "edgemerge/em_runtime.h"

#if defined(__GNUC__) || defined(__clang__)
#define EM_PRINTF_LIKE(fmt_index, args_index) __attribute__((format(printf, fmt_index, args_index)))
#else
#define EM_PRINTF_LIKE(fmt_index, args_index)
#endif

struct em_node;

/* Formats err->message (if err is not NULL) and returns status. */
em_status em_fail(em_error *err, em_status status, const char *fmt, ...) EM_PRINTF_LIKE(3, 4);
/* Same, prefixed with "GRAPH node N (OP): ". */
em_status em_fail_node(em_error *err, em_status status, const struct em_node *node, const char *fmt, ...)
    EM_PRINTF_LIKE(4, 5);
void em_error_clear(em_error *err);

#endif /* EDGEMERGE_EM_ERROR_H */
