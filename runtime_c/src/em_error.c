/* Error reporting (em_error.h) and the public status names. */
#include <stdarg.h>
#include <stdio.h>

#include "em_internal.h"

em_status em_fail(em_error *err, em_status status, const char *fmt, ...)
{
    if (err != NULL) {
        va_list args;
        err->status = status;
        va_start(args, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, args);
        va_end(args);
    }
    return status;
}

em_status em_fail_node(em_error *err, em_status status, const em_node *node, const char *fmt, ...)
{
    if (err != NULL) {
        va_list args;
        int used = snprintf(err->message, sizeof err->message, "GRAPH node %" PRIu32 " (%s): ", node->id,
                            node->reg != NULL ? node->reg->op_name : "unknown op");
        err->status = status;
        if (used < 0) used = 0;
        if ((size_t)used < sizeof err->message) {
            va_start(args, fmt);
            vsnprintf(err->message + used, sizeof err->message - (size_t)used, fmt, args);
            va_end(args);
        }
    }
    return status;
}

void em_error_clear(em_error *err)
{
    if (err != NULL) {
        err->status = EM_STATUS_OK;
        err->message[0] = '\0';
    }
}

const char *em_status_name(em_status status)
{
    switch (status) {
    case EM_STATUS_OK: return "ok";
    case EM_STATUS_BAD_MAGIC: return "bad magic";
    case EM_STATUS_FUTURE_VERSION: return "future version";
    case EM_STATUS_TRUNCATED: return "truncated";
    case EM_STATUS_BAD_CRC: return "bad CRC";
    case EM_STATUS_CORRUPT: return "corrupt";
    case EM_STATUS_LIMIT: return "limit exceeded";
    case EM_STATUS_NO_MEMORY: return "out of memory";
    case EM_STATUS_BAD_ARGUMENT: return "bad argument";
    case EM_STATUS_MISALIGNED: return "misaligned";
    case EM_STATUS_UNSUPPORTED: return "unsupported";
    default: return "unknown status";
    }
}
