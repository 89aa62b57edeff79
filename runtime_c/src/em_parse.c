/* Parsing a .emm buffer (docs/FORMAT.md) into an em_model's records: steps 1 and 2 of em_model_load
 * (em_loader.c), and the node names of step 4.
 *
 *   1. header and section table: magic, version, sentinels, header CRC, fixed fields, file length,
 *      section table bounds and CRC; then every section's kind, order, alignment, bounds, zero
 *      padding and CRC;
 *   2. META (typed entries, key charset, unique keys, UTF-8 strings, required keys), TASKS (names),
 *      GRAPH (inputs, every node record's generic fields), TENSORS + DATA (dtype, dims, numel with
 *      checked products, nbytes, contiguous aligned offsets, zero padding).
 *
 * Every read of the file goes through read_bytes(), which fails with "truncated"; every failure returns
 * at the line that found it, through em_fail(), with a message naming the section, record and field. */
#include <stdlib.h>
#include <string.h>

#include "em_parse.h"

/* ---------------------------------------------------------------------------------------------
 * Bounded reads
 * --------------------------------------------------------------------------------------------- */

typedef struct em_reader {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const char *section;     /* "file", "META", ... */
    const char *record_kind; /* "entry", "task", ... while inside a record, else NULL */
    uint32_t record;
} em_reader;

static void reader_init(em_reader *r, const uint8_t *data, size_t size, const char *section)
{
    r->data = data;
    r->size = size;
    r->pos = 0;
    r->section = section;
    r->record_kind = NULL;
    r->record = 0;
}

/* The one place that hands out file bytes: n bytes at the cursor, or "truncated". */
static em_status read_bytes(em_reader *r, size_t n, const uint8_t **out, const char *what, em_error *err)
{
    *out = NULL;
    if (n > r->size - r->pos) {
        if (r->record_kind != NULL)
            return em_fail(err, EM_STATUS_TRUNCATED,
                           "%s %s %" PRIu32 ": truncated reading %s (needs %zu bytes at offset %zu, %s has %zu)",
                           r->section, r->record_kind, r->record, what, n, r->pos, r->section, r->size);
        return em_fail(err, EM_STATUS_TRUNCATED, "%s: truncated reading %s (needs %zu bytes at offset %zu, %s has %zu)",
                       r->section, what, n, r->pos, r->section, r->size);
    }
    *out = r->data + r->pos;
    r->pos += n;
    return EM_STATUS_OK;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static em_status read_u32(em_reader *r, uint32_t *out, const char *what, em_error *err)
{
    const uint8_t *p;
    em_status st = read_bytes(r, 4, &p, what, err);
    if (st == EM_STATUS_OK) *out = le32(p);
    return st;
}

/* Section payloads must end exactly after their last record. */
static em_status expect_section_end(const em_reader *r, const char *after, em_error *err)
{
    if (r->pos == r->size) return EM_STATUS_OK;
    return em_fail(err, EM_STATUS_CORRUPT, "%s: %zu unexpected bytes after the %s", r->section, r->size - r->pos,
                   after);
}

/* ---------------------------------------------------------------------------------------------
 * Loader state
 * --------------------------------------------------------------------------------------------- */

static em_span section_span(const em_loader *L, uint32_t kind)
{
    return L->sections[kind - EM_SECTION_META];
}

/* count × elem zeroed bytes from the model's allocator, with the product checked. */
void *em_alloc_array(const em_allocator *a, size_t count, size_t elem, const char *what, em_status *st,
                     em_error *err)
{
    size_t bytes;
    void *p;
    if (!em_mul_size(count, elem, &bytes)) {
        *st = em_fail(err, EM_STATUS_LIMIT, "%s: %zu x %zu bytes do not fit in size_t", what, count, elem);
        return NULL;
    }
    if (bytes == 0) bytes = 1; /* a valid pointer even for empty tables */
    p = a->alloc(a->user, bytes);
    if (p == NULL) {
        *st = em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    memset(p, 0, bytes);
    *st = EM_STATUS_OK;
    return p;
}

static const char *section_kind_name(uint32_t kind)
{
    switch (kind) {
    case EM_SECTION_META: return "META";
    case EM_SECTION_TASKS: return "TASKS";
    case EM_SECTION_GRAPH: return "GRAPH";
    case EM_SECTION_TENSORS: return "TENSORS";
    case EM_SECTION_DATA: return "DATA";
    default: return kind >= EM_EXTENSION_SECTION_MIN && kind <= EM_EXTENSION_SECTION_MAX ? "extension" : "unknown";
    }
}

/* ---------------------------------------------------------------------------------------------
 * 1. Header and section table
 * --------------------------------------------------------------------------------------------- */

/* Header fields, by byte offset (FORMAT.md "Header"). */
enum {
    H_MAGIC = 0, H_VERSION = 4, H_SENTINEL_U32 = 8, H_SENTINEL_F32 = 12, H_HEADER_BYTES = 16,
    H_ALIGNMENT = 20, H_SECTION_COUNT = 24, H_FLAGS = 28, H_FILE_BYTES = 32, H_TABLE_OFFSET = 40,
    H_TABLE_CRC = 48, H_RESERVED0 = 52, H_RESERVED1 = 56, H_HEADER_CRC = 60
};

static em_status parse_header(const uint8_t *data, size_t size, uint32_t *version, uint32_t *section_count,
                              em_error *err)
{
    em_reader r;
    const uint8_t *h;
    uint32_t v, crc;
    uint64_t file_bytes;
    em_status st;

    reader_init(&r, data, size, "file");
    st = read_bytes(&r, EM_HEADER_BYTES, &h, "the 64-byte header", err);
    if (st != EM_STATUS_OK) return st;

    /* The order below is FORMAT.md's: each check only makes sense once the previous one passed. */
    if (le32(h + H_MAGIC) != EM_MAGIC_U32)
        return em_fail(err, EM_STATUS_BAD_MAGIC,
                       "header.magic: bytes %02X %02X %02X %02X, expected 45 4D 4D 46 (\"EMMF\"): not an .emm file",
                       h[0], h[1], h[2], h[3]);
    v = le32(h + H_VERSION);
    if (v > EM_VERSION)
        return em_fail(err, EM_STATUS_FUTURE_VERSION, "header.version: future version %" PRIu32
                       ", this reader supports %u to %u", v, EM_MIN_VERSION, EM_VERSION);
    if (v == 0) return em_fail(err, EM_STATUS_CORRUPT, "header.version: invalid version 0");
    if (le32(h + H_SENTINEL_U32) != EM_SENTINEL_U32)
        return em_fail(err, EM_STATUS_CORRUPT, "header.sentinel_u32: 0x%08" PRIX32
                       ", expected 0x%08X (byte-order mismatch)", le32(h + H_SENTINEL_U32), EM_SENTINEL_U32);
    if (le32(h + H_SENTINEL_F32) != EM_SENTINEL_F32_BITS)
        return em_fail(err, EM_STATUS_CORRUPT, "header.sentinel_f32: bits 0x%08" PRIX32
                       ", expected 0x%08X (-1.5f; float format mismatch)", le32(h + H_SENTINEL_F32),
                       EM_SENTINEL_F32_BITS);
    crc = em_crc32(h, H_HEADER_CRC);
    if (crc != le32(h + H_HEADER_CRC))
        return em_fail(err, EM_STATUS_BAD_CRC, "header.header_crc32: stored 0x%08" PRIX32 ", computed 0x%08" PRIX32
                       " (the header is corrupt)", le32(h + H_HEADER_CRC), crc);
    if (le32(h + H_HEADER_BYTES) != EM_HEADER_BYTES)
        return em_fail(err, EM_STATUS_CORRUPT, "header.header_bytes: %" PRIu32 ", expected %u",
                       le32(h + H_HEADER_BYTES), EM_HEADER_BYTES);
    if (le32(h + H_ALIGNMENT) != EM_ALIGNMENT)
        return em_fail(err, EM_STATUS_CORRUPT, "header.alignment: %" PRIu32 ", expected %u",
                       le32(h + H_ALIGNMENT), EM_ALIGNMENT);
    if (le32(h + H_FLAGS) != 0)
        return em_fail(err, EM_STATUS_UNSUPPORTED, "header.flags: 0x%08" PRIX32 ", no flags are defined in version %u",
                       le32(h + H_FLAGS), EM_VERSION);
    if (le32(h + H_RESERVED0) != 0 || le32(h + H_RESERVED1) != 0)
        return em_fail(err, EM_STATUS_CORRUPT, "header.reserved0/reserved1: 0x%08" PRIX32 "/0x%08" PRIX32
                       ", expected 0", le32(h + H_RESERVED0), le32(h + H_RESERVED1));
    file_bytes = le64(h + H_FILE_BYTES);
    if (file_bytes > EM_MAX_FILE_BYTES)
        return em_fail(err, EM_STATUS_LIMIT, "header.file_bytes: %" PRIu64 " exceeds MAX_FILE_BYTES %" PRIu64,
                       file_bytes, (uint64_t)EM_MAX_FILE_BYTES);
    if (file_bytes > (uint64_t)size)
        return em_fail(err, EM_STATUS_TRUNCATED, "header.file_bytes: %" PRIu64 ", but the buffer has %zu bytes: "
                       "truncated", file_bytes, size);
    if (file_bytes < (uint64_t)size)
        return em_fail(err, EM_STATUS_CORRUPT, "header.file_bytes: %" PRIu64 ", but the buffer has %zu bytes "
                       "(trailing bytes)", file_bytes, size);
    *section_count = le32(h + H_SECTION_COUNT);
    if (*section_count < EM_REQUIRED_SECTION_COUNT)
        return em_fail(err, EM_STATUS_CORRUPT, "header.section_count: %" PRIu32 ", at least %u are required",
                       *section_count, EM_REQUIRED_SECTION_COUNT);
    if (*section_count > EM_MAX_SECTIONS)
        return em_fail(err, EM_STATUS_LIMIT, "header.section_count: %" PRIu32 " exceeds MAX_SECTIONS %u",
                       *section_count, EM_MAX_SECTIONS);
    if (le64(h + H_TABLE_OFFSET) != EM_HEADER_BYTES)
        return em_fail(err, EM_STATUS_CORRUPT, "header.section_table_offset: %" PRIu64 ", expected %u",
                       le64(h + H_TABLE_OFFSET), EM_HEADER_BYTES);
    *version = v;
    return EM_STATUS_OK;
}

static em_status parse_sections(em_loader *L, const uint8_t *data, size_t size, uint32_t section_count,
                                em_error *err)
{
    em_reader r;
    const uint8_t *table;
    uint32_t crc, i;
    uint32_t next_required = EM_SECTION_META;
    size_t table_bytes = (size_t)section_count * EM_SECTION_ENTRY_BYTES; /* <= 64 × 32 */
    size_t prev_end, first_offset;
    uint64_t prev_offset = 0;
    em_status st;

    reader_init(&r, data, size, "file");
    r.pos = EM_HEADER_BYTES;
    st = read_bytes(&r, table_bytes, &table, "the section table", err);
    if (st != EM_STATUS_OK) return st;
    crc = em_crc32(table, table_bytes);
    if (crc != le32(data + H_TABLE_CRC))
        return em_fail(err, EM_STATUS_BAD_CRC, "section table: CRC mismatch (stored 0x%08" PRIX32
                       ", computed 0x%08" PRIX32 "): the section table is corrupt", le32(data + H_TABLE_CRC), crc);

    prev_end = EM_HEADER_BYTES + table_bytes;
    (void)em_align_size(prev_end, EM_ALIGNMENT, &first_offset); /* small: cannot overflow */
    for (i = 0; i < section_count; ++i) {
        const uint8_t *e = table + (size_t)i * EM_SECTION_ENTRY_BYTES;
        const uint32_t kind = le32(e), flags = le32(e + 4), stored_crc = le32(e + 24), reserved = le32(e + 28);
        const uint64_t offset = le64(e + 8), payload = le64(e + 16);
        const char *name = section_kind_name(kind);
        const int required = kind >= EM_SECTION_META && kind <= EM_SECTION_DATA;
        uint64_t end;
        size_t k;

        if (flags != 0)
            return em_fail(err, EM_STATUS_UNSUPPORTED, "section %" PRIu32 " (%s): flags 0x%08" PRIX32
                           ", no section flags are defined in version %u", i, name, flags, EM_VERSION);
        if (reserved != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 " (%s): reserved is 0x%08" PRIX32
                           ", expected 0", i, name, reserved);
        if (required && kind != next_required)
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 " (%s): out of order or repeated "
                           "(expected %s next; kinds 1..5 appear once each, in order)", i, name,
                           next_required <= EM_SECTION_DATA ? section_kind_name(next_required) : "no required section");
        if (!required && (kind < EM_EXTENSION_SECTION_MIN || kind > EM_EXTENSION_SECTION_MAX))
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 ": unknown kind %" PRIu32
                           " (required kinds are 1..5, extensions 0x1000..0xFFFF)", i, kind);
        if (offset % EM_ALIGNMENT != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 " (%s): offset %" PRIu64
                           " is not a multiple of the alignment %u", i, name, offset, EM_ALIGNMENT);
        if (i == 0 && offset != first_offset)
            return em_fail(err, EM_STATUS_CORRUPT, "section 0 (%s): offset %" PRIu64 ", expected %zu (the first "
                           "section starts at align(64 + 32 x section_count))", name, offset, first_offset);
        if (i > 0 && offset <= prev_offset)
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 " (%s): offset %" PRIu64
                           " does not increase (previous section at %" PRIu64 ")", i, name, offset, prev_offset);
        if (offset < prev_end)
            return em_fail(err, EM_STATUS_CORRUPT, "section %" PRIu32 " (%s): offset %" PRIu64
                           " overlaps the previous section, which ends at %zu", i, name, offset, prev_end);
        if (!em_add_u64(offset, payload, &end) || end > (uint64_t)size)
            return em_fail(err, EM_STATUS_TRUNCATED, "section %" PRIu32 " (%s): %" PRIu64 " bytes at offset %" PRIu64
                           " extend past the end of the file (%zu bytes): truncated", i, name, payload, offset,
                           size);
        /* now offset and end are within the buffer, so they fit in size_t */
        for (k = prev_end; k < (size_t)offset; ++k)
            if (data[k] != 0)
                return em_fail(err, EM_STATUS_CORRUPT, "file offset %zu: padding byte before section %" PRIu32
                               " (%s) is 0x%02X, padding must be zero", k, i, name, data[k]);
        crc = em_crc32(data + (size_t)offset, (size_t)payload);
        if (crc != stored_crc)
            return em_fail(err, EM_STATUS_BAD_CRC, "section %" PRIu32 " (%s): CRC mismatch (stored 0x%08" PRIX32
                           ", computed 0x%08" PRIX32 "): the section data is corrupt", i, name, stored_crc, crc);
        if (required) {
            L->sections[kind - EM_SECTION_META].data = data + (size_t)offset;
            L->sections[kind - EM_SECTION_META].size = (size_t)payload;
            ++next_required;
        }
        /* extension sections: bounds and CRC checked above, contents skipped */
        prev_offset = offset;
        prev_end = (size_t)end;
    }
    if (next_required <= EM_SECTION_DATA)
        return em_fail(err, EM_STATUS_CORRUPT, "section table: required section %s is missing",
                       section_kind_name(next_required));
    if (prev_end != size)
        return em_fail(err, EM_STATUS_CORRUPT, "file: %zu bytes after the end of the last section (at %zu)",
                       size - prev_end, prev_end);
    return EM_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * 2a. META
 * --------------------------------------------------------------------------------------------- */

static int is_key_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Index of the first byte that breaks UTF-8 (no overlongs, no surrogates, <= U+10FFFF), or n. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        size_t len, k;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c < 0x80) {
            ++i;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return i;
        if (len > n - i || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (k = 2; k < len; ++k)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += len;
    }
    return n;
}

static int key_equals(const em_meta_entry *e, const char *key)
{
    const size_t n = strlen(key);
    return e->key_len == n && memcmp(e->key, key, n) == 0;
}

/* Matches keys of the form PREFIX N '.' SUFFIX with N a canonical decimal (no leading zeros);
 * returns 1 and sets *n and *suffix (pointing into the key, length *suffix_len). */
static int match_numbered_key(const em_meta_entry *e, const char *prefix, uint32_t *n, const uint8_t **suffix,
                              size_t *suffix_len)
{
    const size_t plen = strlen(prefix);
    size_t i = plen;
    uint64_t value = 0;
    if (e->key_len <= plen || memcmp(e->key, prefix, plen) != 0) return 0;
    while (i < e->key_len && e->key[i] >= '0' && e->key[i] <= '9') {
        value = value * 10u + (uint64_t)(e->key[i] - '0');
        if (value > UINT32_MAX) return 0;
        ++i;
    }
    if (i == plen || (e->key[plen] == '0' && i > plen + 1)) return 0;
    if (i >= e->key_len || e->key[i] != '.') return 0;
    *n = (uint32_t)value;
    *suffix = e->key + i + 1;
    *suffix_len = e->key_len - i - 1;
    return 1;
}

static int suffix_is(const uint8_t *suffix, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(suffix, want, len) == 0;
}

/* The type FORMAT.md's key table gives a key, or 0 for keys it leaves open (unknown keys, merge.*). */
static uint32_t expected_meta_type(const em_meta_entry *e)
{
    const uint8_t *suffix;
    size_t len;
    uint32_t n;
    if (key_equals(e, EM_KEY_GENERAL_TOOL_VERSION)) return EM_META_STRING;
    if (key_equals(e, EM_KEY_GENERAL_ORIGINAL_BYTES) || key_equals(e, EM_KEY_SOURCE_COUNT)) return EM_META_U64;
    if (match_numbered_key(e, EM_KEY_SOURCE_PREFIX, &n, &suffix, &len)) {
        if (suffix_is(suffix, len, "task") || suffix_is(suffix, len, "file")) return EM_META_STRING;
        if (suffix_is(suffix, len, "param_bytes")) return EM_META_U64;
    }
    if (match_numbered_key(e, EM_KEY_NODE_PREFIX, &n, &suffix, &len) &&
        (suffix_is(suffix, len, "name") || suffix_is(suffix, len, "sources") || suffix_is(suffix, len, "match_output")))
        return EM_META_STRING;
    if (match_numbered_key(e, EM_KEY_TENSOR_PREFIX, &n, &suffix, &len) && suffix_is(suffix, len, "name")) return EM_META_STRING;
    return 0;
}

static const char *meta_type_name(uint32_t type)
{
    switch (type) {
    case EM_META_U64: return "u64";
    case EM_META_I64: return "i64";
    case EM_META_F64: return "f64";
    case EM_META_STRING: return "string";
    default: return "unknown";
    }
}

static int compare_meta_keys(const void *a, const void *b)
{
    const em_meta_entry *x = (const em_meta_entry *)a, *y = (const em_meta_entry *)b;
    const size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    const int c = memcmp(x->key, y->key, n);
    if (c != 0) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->position < y->position ? -1 : (x->position > y->position ? 1 : 0);
}

static em_status parse_meta(em_loader *L, em_error *err)
{
    static const char *const required_keys[] = {EM_KEY_GENERAL_TOOL_VERSION,
                                                EM_KEY_GENERAL_ORIGINAL_BYTES, EM_KEY_SOURCE_COUNT};
    /* smallest entry: key_len + 1 key byte + type + an empty string's length */
    const size_t min_entry_bytes = 4u + 1u + 4u + 4u;
    const em_span span = section_span(L, EM_SECTION_META);
    em_reader r;
    uint32_t count, i;
    size_t k;
    em_status st;

    reader_init(&r, span.data, span.size, "META");
    st = read_u32(&r, &count, "the entry count", err);
    if (st != EM_STATUS_OK) return st;
    if (count > EM_MAX_META_ENTRIES)
        return em_fail(err, EM_STATUS_LIMIT, "META: %" PRIu32 " entries exceed MAX_META_ENTRIES %u", count,
                       EM_MAX_META_ENTRIES);
    /* bound the count by what the section can hold before allocating for it */
    if ((size_t)count > (r.size - r.pos) / min_entry_bytes)
        return em_fail(err, EM_STATUS_TRUNCATED, "META: %" PRIu32 " entries need at least %zu bytes, the section "
                       "has %zu left: truncated", count, (size_t)count * min_entry_bytes, r.size - r.pos);
    L->meta = (em_meta_entry *)em_alloc_array(&L->model->allocator, count, sizeof *L->meta, "META entries", &st, err);
    if (L->meta == NULL) return st;
    L->meta_count = count;

    r.record_kind = "entry";
    for (i = 0; i < count; ++i) {
        em_meta_entry *e = &L->meta[i];
        const uint8_t *p;
        size_t bad;
        r.record = i;
        e->position = i;
        st = read_u32(&r, &e->key_len, "key_len", err);
        if (st != EM_STATUS_OK) return st;
        if (e->key_len == 0) return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 ": key_len is 0", i);
        if (e->key_len > EM_MAX_KEY_BYTES)
            return em_fail(err, EM_STATUS_LIMIT, "META entry %" PRIu32 ": key_len %" PRIu32
                           " exceeds MAX_KEY_BYTES %u", i, e->key_len, EM_MAX_KEY_BYTES);
        st = read_bytes(&r, e->key_len, &e->key, "the key", err);
        if (st != EM_STATUS_OK) return st;
        for (k = 0; k < e->key_len; ++k)
            if (!is_key_char(e->key[k]))
                return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 ": key byte %zu is 0x%02X, outside "
                               "[a-z0-9_.-]", i, k, e->key[k]);
        st = read_u32(&r, &e->type, "the value type", err);
        if (st != EM_STATUS_OK) return st;
        switch (e->type) {
        case EM_META_U64:
        case EM_META_I64:
        case EM_META_F64:
            e->value_len = 8;
            st = read_bytes(&r, 8, &e->value, "the 8-byte value", err);
            break;
        case EM_META_STRING:
            st = read_u32(&r, &e->value_len, "the string length", err);
            if (st != EM_STATUS_OK) return st;
            if (e->value_len > EM_MAX_STRING_BYTES)
                return em_fail(err, EM_STATUS_LIMIT, "META entry %" PRIu32 " (%.*s): string of %" PRIu32
                               " bytes exceeds MAX_STRING_BYTES %u", i, (int)e->key_len, (const char *)e->key,
                               e->value_len, EM_MAX_STRING_BYTES);
            st = read_bytes(&r, e->value_len, &p, "the string", err);
            if (st != EM_STATUS_OK) return st;
            e->value = p;
            bad = utf8_invalid_at(p, e->value_len);
            if (bad != e->value_len)
                return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 " (%.*s): string is not valid UTF-8 "
                               "(byte %zu)", i, (int)e->key_len, (const char *)e->key, bad);
            break;
        default:
            return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 " (%.*s): unknown value type %" PRIu32,
                           i, (int)e->key_len, (const char *)e->key, e->type);
        }
        if (st != EM_STATUS_OK) return st;
    }
    r.record_kind = NULL;
    st = expect_section_end(&r, "last entry", err);
    if (st != EM_STATUS_OK) return st;

    /* Unique keys: sort (O(n log n)), then equal keys are neighbours. */
    qsort(L->meta, count, sizeof *L->meta, compare_meta_keys);
    for (i = 1; i < count; ++i) {
        const em_meta_entry *a = &L->meta[i - 1], *b = &L->meta[i];
        if (a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0)
            return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 ": duplicate key \"%.*s\" (also entry %" PRIu32
                           ")", b->position, (int)b->key_len, (const char *)b->key, a->position);
    }
    for (i = 0; i < count; ++i) {
        const em_meta_entry *e = &L->meta[i];
        const uint32_t want = expected_meta_type(e);
        if (want != 0 && e->type != want)
            return em_fail(err, EM_STATUS_CORRUPT, "META entry %" PRIu32 " (%.*s): type %s, expected %s",
                           e->position, (int)e->key_len, (const char *)e->key, meta_type_name(e->type),
                           meta_type_name(want));
    }
    for (k = 0; k < sizeof required_keys / sizeof required_keys[0]; ++k) {
        for (i = 0; i < count; ++i)
            if (key_equals(&L->meta[i], required_keys[k])) break;
        if (i == count)
            return em_fail(err, EM_STATUS_CORRUPT, "META: required key \"%s\" is missing", required_keys[k]);
    }
    return EM_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * 2b. TASKS
 * --------------------------------------------------------------------------------------------- */

static int is_name_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

static em_status parse_tasks(em_loader *L, em_error *err)
{
    em_model *m = L->model;
    const em_span span = section_span(L, EM_SECTION_TASKS);
    em_reader r;
    uint32_t count, i, j;
    em_status st;

    reader_init(&r, span.data, span.size, "TASKS");
    st = read_u32(&r, &count, "the task count", err);
    if (st != EM_STATUS_OK) return st;
    if (count == 0) return em_fail(err, EM_STATUS_CORRUPT, "TASKS: count is 0, a model has 1..%u tasks", EM_MAX_TASKS);
    if (count > EM_MAX_TASKS)
        return em_fail(err, EM_STATUS_LIMIT, "TASKS: count %" PRIu32 " exceeds MAX_TASKS %u", count, EM_MAX_TASKS);
    m->tasks = (em_task *)em_alloc_array(&m->allocator, count, sizeof *m->tasks, "tasks", &st, err);
    if (m->tasks == NULL) return st;
    m->task_count = count;

    r.record_kind = "task";
    for (i = 0; i < count; ++i) {
        em_task *t = &m->tasks[i];
        const uint8_t *rec;
        size_t len = 0, k;
        r.record = i;
        st = read_bytes(&r, EM_TASK_RECORD_BYTES, &rec, "the 48-byte record", err);
        if (st != EM_STATUS_OK) return st;
        while (len < EM_TASK_NAME_BYTES && rec[len] != 0) ++len;
        if (len == EM_TASK_NAME_BYTES)
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 ": name is not NUL-terminated within "
                           "%u bytes", i, EM_TASK_NAME_BYTES);
        if (len == 0) return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 ": name is empty", i);
        for (k = 0; k < len; ++k)
            if (!is_name_char(rec[k]))
                return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 ": name byte %zu is 0x%02X, outside "
                               "[A-Za-z0-9_.-]", i, k, rec[k]);
        for (k = len; k < EM_TASK_NAME_BYTES; ++k)
            if (rec[k] != 0)
                return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 ": name is not NUL-padded (byte %zu is "
                               "0x%02X)", i, k, rec[k]);
        memcpy(t->name, rec, EM_TASK_NAME_BYTES); /* NUL-terminated: len < 32 */
        t->input = le32(rec + 32);
        t->output = le32(rec + 36);
        t->classes = le32(rec + 40);
        if (le32(rec + 44) != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): reserved is %" PRIu32
                           ", expected 0", i, t->name, le32(rec + 44));
        for (j = 0; j < i; ++j) /* at most 64 tasks: quadratic is fine */
            if (strcmp(m->tasks[j].name, t->name) == 0)
                return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 ": duplicate name '%s' (also task %"
                               PRIu32 ")", i, t->name, j);
    }
    r.record_kind = NULL;
    return expect_section_end(&r, "last task", err);
}

/* ---------------------------------------------------------------------------------------------
 * 2c. GRAPH
 * --------------------------------------------------------------------------------------------- */

/* Fills *out from (h, w, c) if every dim is >= 1 and the product is <= MAX_VALUE_ELEMENTS.
 * Returns 0 for a zero dim, -1 past the limit, 1 if fine. */
static int make_value_shape(uint32_t h, uint32_t w, uint32_t c, em_shape *out)
{
    uint64_t numel;
    if (h == 0 || w == 0 || c == 0) return 0;
    numel = (uint64_t)h * w; /* < 2^64 */
    if (numel > EM_MAX_VALUE_ELEMENTS || !em_mul_u64(numel, c, &numel) || numel > EM_MAX_VALUE_ELEMENTS) return -1;
    out->h = h;
    out->w = w;
    out->c = c;
    out->numel = (uint32_t)numel;
    return 1;
}

/* Node record fields, by 32-bit word (FORMAT.md "struct em_node"). */
enum {
    N_OP, N_INPUT, N_ACTIVATION, N_FLAGS, N_OUT_H, N_OUT_W, N_OUT_C, N_KERNEL_H, N_KERNEL_W, N_STRIDE_H,
    N_STRIDE_W, N_PAD_TOP, N_PAD_LEFT, N_PAD_BOTTOM, N_PAD_RIGHT, N_SEG_LEN, N_CODEWORDS, N_WEIGHT, N_INDEX,
    N_BIAS, N_RESERVED
};

static em_status check_range(const em_node *node, const char *field, uint32_t value, uint32_t max, em_error *err)
{
    if (value == 0) return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s is 0", field);
    if (value > max)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "%s %" PRIu32 " exceeds the limit %" PRIu32, field, value, max);
    return EM_STATUS_OK;
}

static em_status check_max(const em_node *node, const char *field, uint32_t value, uint32_t max, em_error *err)
{
    if (value <= max) return EM_STATUS_OK;
    return em_fail_node(err, EM_STATUS_LIMIT, node, "%s %" PRIu32 " exceeds the limit %" PRIu32, field, value, max);
}

static em_status check_pad(const em_node *node, const char *pad_name, uint32_t pad, const char *kernel_name,
                           uint32_t kernel, em_error *err)
{
    if (pad < kernel) return EM_STATUS_OK;
    return em_fail_node(err, EM_STATUS_CORRUPT, node, "%s %" PRIu32 " is not smaller than %s %" PRIu32, pad_name,
                        pad, kernel_name, kernel);
}

/* The checks every node record gets, whatever its op; op-specific rules are in its prepare(). */
static em_status parse_node_record(em_model *m, uint32_t i, const uint8_t *rec, em_error *err)
{
    em_node *node = &m->nodes[i];
    const uint32_t own_value = m->input_count + i;
    uint32_t f[24];
    uint32_t k;
    em_status st;
    int shape_ok;

    for (k = 0; k < 24; ++k) f[k] = le32(rec + 4u * k);
    node->id = i;
    node->op = f[N_OP];
    node->reg = em_op_find(node->op);
    if (node->reg == NULL)
        return em_fail(err, EM_STATUS_UNSUPPORTED, "GRAPH node %" PRIu32 ": unknown op %" PRIu32
                       " (this reader knows ops 1..%u; the file needs a newer runtime)", i, node->op,
                       EM_OP_LUT_DEPTHWISE_CONV2D);
    node->input = f[N_INPUT];
    node->activation = f[N_ACTIVATION];
    node->kernel_h = f[N_KERNEL_H];
    node->kernel_w = f[N_KERNEL_W];
    node->stride_h = f[N_STRIDE_H];
    node->stride_w = f[N_STRIDE_W];
    node->pad_top = f[N_PAD_TOP];
    node->pad_left = f[N_PAD_LEFT];
    node->pad_bottom = f[N_PAD_BOTTOM];
    node->pad_right = f[N_PAD_RIGHT];
    node->seg_len = f[N_SEG_LEN];
    node->codewords = f[N_CODEWORDS];
    node->weight_id = f[N_WEIGHT];
    node->index_id = f[N_INDEX];
    node->bias_id = f[N_BIAS];
    node->name = "";

    if (node->input >= own_value)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "reads value %" PRIu32 ", which is not computed before it "
                            "(this node produces value %" PRIu32 ")", node->input, own_value);
    /* v2: reserved[0] is input_count (FORMAT.md "GRAPH"); v1: every node reads one value */
    node->input_count = 1;
    if (m->version >= 2) {
        node->input_count = f[N_RESERVED];
        if (node->input_count == 0) return em_fail_node(err, EM_STATUS_CORRUPT, node, "input_count is 0");
        if (node->input_count > EM_MAX_NODE_INPUTS)
            return em_fail_node(err, EM_STATUS_LIMIT, node, "input_count %" PRIu32 " exceeds MAX_NODE_INPUTS %u",
                                node->input_count, EM_MAX_NODE_INPUTS);
    }
    if (node->activation > EM_ACT_LAST)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "unknown activation %" PRIu32, node->activation);
    if ((f[N_FLAGS] & ~EM_NODE_FLAGS_KNOWN) != 0)
        return em_fail_node(err, EM_STATUS_UNSUPPORTED, node, "flags 0x%08" PRIX32 ": unknown node flags 0x%08" PRIX32
                            " (this reader knows 0x%08X; the file needs a newer runtime)", f[N_FLAGS],
                            f[N_FLAGS] & ~EM_NODE_FLAGS_KNOWN, EM_NODE_FLAGS_KNOWN);
    node->flags = f[N_FLAGS]; /* which ops may carry which flag: the op's prepare() (em_ops.c) */
    node->input_scale = 0.0f;
    if (node->flags & EM_NODE_FLAG_INT8_ACT) /* FORMAT.md "int8 activations": sx, checked by prepare() */
        memcpy(&node->input_scale, &f[EM_NODE_WORD_INPUT_SCALE], sizeof node->input_scale);
    for (k = m->version >= 2 ? 1u : 0u; k < 4; ++k)
        if (f[N_RESERVED + k] != 0 &&
            !(N_RESERVED + k == EM_NODE_WORD_INPUT_SCALE && (node->flags & EM_NODE_FLAG_INT8_ACT)))
            return em_fail_node(err, EM_STATUS_CORRUPT, node, "reserved[%" PRIu32 "] is %" PRIu32 ", expected 0", k,
                                f[N_RESERVED + k]);
    if ((st = check_range(node, "kernel_h", node->kernel_h, EM_MAX_KERNEL, err)) != EM_STATUS_OK ||
        (st = check_range(node, "kernel_w", node->kernel_w, EM_MAX_KERNEL, err)) != EM_STATUS_OK ||
        (st = check_range(node, "stride_h", node->stride_h, EM_MAX_STRIDE, err)) != EM_STATUS_OK ||
        (st = check_range(node, "stride_w", node->stride_w, EM_MAX_STRIDE, err)) != EM_STATUS_OK)
        return st;
    if (node->op == EM_OP_PAD) { /* explicit padding: no window, pads up to MAX_PAD (its prepare() checks the rest) */
        if ((st = check_max(node, "pad_top", node->pad_top, EM_MAX_PAD, err)) != EM_STATUS_OK ||
            (st = check_max(node, "pad_left", node->pad_left, EM_MAX_PAD, err)) != EM_STATUS_OK ||
            (st = check_max(node, "pad_bottom", node->pad_bottom, EM_MAX_PAD, err)) != EM_STATUS_OK ||
            (st = check_max(node, "pad_right", node->pad_right, EM_MAX_PAD, err)) != EM_STATUS_OK)
            return st;
    } else if ((st = check_pad(node, "pad_top", node->pad_top, "kernel_h", node->kernel_h, err)) != EM_STATUS_OK ||
        (st = check_pad(node, "pad_bottom", node->pad_bottom, "kernel_h", node->kernel_h, err)) != EM_STATUS_OK ||
        (st = check_pad(node, "pad_left", node->pad_left, "kernel_w", node->kernel_w, err)) != EM_STATUS_OK ||
        (st = check_pad(node, "pad_right", node->pad_right, "kernel_w", node->kernel_w, err)) != EM_STATUS_OK)
        return st;
    shape_ok = make_value_shape(f[N_OUT_H], f[N_OUT_W], f[N_OUT_C], &node->out);
    if (shape_ok == 0)
        return em_fail_node(err, EM_STATUS_CORRUPT, node, "declared output shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                            ") has a zero dimension", f[N_OUT_H], f[N_OUT_W], f[N_OUT_C]);
    if (shape_ok < 0)
        return em_fail_node(err, EM_STATUS_LIMIT, node, "declared output shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                            ") holds more than MAX_VALUE_ELEMENTS (%u) elements", f[N_OUT_H], f[N_OUT_W], f[N_OUT_C],
                            EM_MAX_VALUE_ELEMENTS);
    return EM_STATUS_OK;
}

static em_status parse_graph(em_loader *L, em_error *err)
{
    em_model *m = L->model;
    const em_span span = section_span(L, EM_SECTION_GRAPH);
    em_reader r;
    uint32_t i, extra_count = 0;
    uint64_t declared = 0;
    size_t cursor = 0;
    em_status st;

    reader_init(&r, span.data, span.size, "GRAPH");
    if ((st = read_u32(&r, &m->input_count, "input_count", err)) != EM_STATUS_OK ||
        (st = read_u32(&r, &m->node_count, "node_count", err)) != EM_STATUS_OK)
        return st;
    if (m->version >= 2) {
        uint32_t reserved;
        if ((st = read_u32(&r, &extra_count, "extra_input_count", err)) != EM_STATUS_OK ||
            (st = read_u32(&r, &reserved, "reserved", err)) != EM_STATUS_OK)
            return st;
        if (reserved != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "GRAPH: reserved is %" PRIu32 ", expected 0", reserved);
    }
    if (m->input_count == 0) return em_fail(err, EM_STATUS_CORRUPT, "GRAPH: input_count is 0");
    if (m->input_count > EM_MAX_INPUTS)
        return em_fail(err, EM_STATUS_LIMIT, "GRAPH: input_count %" PRIu32 " exceeds MAX_INPUTS %u", m->input_count,
                       EM_MAX_INPUTS);
    if (m->node_count == 0) return em_fail(err, EM_STATUS_CORRUPT, "GRAPH: node_count is 0");
    if (m->node_count > EM_MAX_NODES)
        return em_fail(err, EM_STATUS_LIMIT, "GRAPH: node_count %" PRIu32 " exceeds MAX_NODES %u", m->node_count,
                       EM_MAX_NODES);
    if (extra_count > m->node_count * (EM_MAX_NODE_INPUTS - 1u)) /* <= 4096 · 63: no overflow */
        return em_fail(err, EM_STATUS_LIMIT, "GRAPH: extra_input_count %" PRIu32 " exceeds node_count x "
                       "(MAX_NODE_INPUTS - 1) = %" PRIu32, extra_count, m->node_count * (EM_MAX_NODE_INPUTS - 1u));
    m->value_count = m->input_count + m->node_count;
    m->value_shapes = (em_shape *)em_alloc_array(&m->allocator, m->value_count, sizeof *m->value_shapes,
                                              "value shapes", &st, err);
    if (m->value_shapes == NULL) return st;
    m->nodes = (em_node *)em_alloc_array(&m->allocator, m->node_count, sizeof *m->nodes, "nodes", &st, err);
    if (m->nodes == NULL) return st;
    m->node_inputs = (uint32_t *)em_alloc_array(&m->allocator, (size_t)m->node_count + extra_count,
                                                sizeof *m->node_inputs, "node inputs", &st, err);
    if (m->node_inputs == NULL) return st;

    r.record_kind = "input";
    for (i = 0; i < m->input_count; ++i) {
        const uint8_t *rec;
        uint32_t h, w, c;
        int shape_ok;
        r.record = i;
        st = read_bytes(&r, EM_INPUT_RECORD_BYTES, &rec, "the 16-byte record", err);
        if (st != EM_STATUS_OK) return st;
        h = le32(rec);
        w = le32(rec + 4);
        c = le32(rec + 8);
        if (le32(rec + 12) != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "GRAPH input %" PRIu32 ": reserved is %" PRIu32 ", expected 0", i,
                           le32(rec + 12));
        shape_ok = make_value_shape(h, w, c, &m->value_shapes[i]);
        if (shape_ok == 0)
            return em_fail(err, EM_STATUS_CORRUPT, "GRAPH input %" PRIu32 ": shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                           ") has a zero dimension", i, h, w, c);
        if (shape_ok < 0)
            return em_fail(err, EM_STATUS_LIMIT, "GRAPH input %" PRIu32 ": shape (%" PRIu32 ", %" PRIu32 ", %" PRIu32
                           ") holds more than MAX_VALUE_ELEMENTS (%u) elements", i, h, w, c, EM_MAX_VALUE_ELEMENTS);
    }
    r.record_kind = "node";
    for (i = 0; i < m->node_count; ++i) {
        const uint8_t *rec;
        r.record = i;
        st = read_bytes(&r, EM_NODE_RECORD_BYTES, &rec, "the 96-byte record", err);
        if (st != EM_STATUS_OK) return st;
        st = parse_node_record(m, i, rec, err);
        if (st != EM_STATUS_OK) return st;
        declared += m->nodes[i].input_count - 1u; /* <= MAX_NODES · 63 */
    }
    if (declared != extra_count)
        return em_fail(err, EM_STATUS_CORRUPT, "GRAPH: extra_input_count is %" PRIu32 ", but the nodes' input_count "
                       "fields need %" PRIu64 " extra inputs", extra_count, declared);
    /* every node's inputs: input 0 from the record, the others from the extra list in node order */
    r.record_kind = "extra input";
    for (i = 0; i < m->node_count; ++i) {
        em_node *node = &m->nodes[i];
        const uint32_t own_value = m->input_count + i;
        uint32_t k;
        node->inputs = m->node_inputs + cursor;
        m->node_inputs[cursor++] = node->input;
        for (k = 1; k < node->input_count; ++k) {
            uint32_t v;
            r.record = (uint32_t)(cursor - i - 1u);
            if ((st = read_u32(&r, &v, "an input id", err)) != EM_STATUS_OK) return st;
            if (v >= own_value)
                return em_fail_node(err, EM_STATUS_CORRUPT, node, "input %" PRIu32 " reads value %" PRIu32 ", which "
                                    "is not computed before it (this node produces value %" PRIu32 ")", k, v,
                                    own_value);
            m->node_inputs[cursor++] = v;
        }
    }
    r.record_kind = NULL;
    return expect_section_end(&r, m->version >= 2 ? "extra-input list" : "last node", err);
}

/* ---------------------------------------------------------------------------------------------
 * 2d. TENSORS and DATA
 * --------------------------------------------------------------------------------------------- */

static em_status parse_tensor_record(em_model *m, uint32_t i, const uint8_t *rec, const em_span *data,
                                     uint64_t expected_offset, em_error *err)
{
    em_tensor *t = &m->tensors[i];
    uint64_t numel = 1, offset, nbytes, expected_nbytes, end;
    uint32_t d;

    t->dtype = le32(rec);
    t->ndim = le32(rec + 4);
    for (d = 0; d < 4; ++d) t->dims[d] = le32(rec + 8 + 4 * d);
    t->bits = le32(rec + 24);
    offset = le64(rec + 32);
    nbytes = le64(rec + 40);

    if (t->dtype != EM_DTYPE_F32 && t->dtype != EM_DTYPE_IDX)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": unknown dtype %" PRIu32, i, t->dtype);
    if (t->ndim < 1 || t->ndim > 4)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": ndim %" PRIu32 " outside 1..4", i, t->ndim);
    for (d = 0; d < 4; ++d) {
        if (d >= t->ndim) {
            if (t->dims[d] != 0)
                return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": dims[%" PRIu32 "] is %" PRIu32
                               " past ndim %" PRIu32 ", expected 0", i, d, t->dims[d], t->ndim);
            continue;
        }
        if (t->dims[d] == 0)
            return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": dims[%" PRIu32 "] is 0", i, d);
        if (t->dims[d] > EM_MAX_DIM)
            return em_fail(err, EM_STATUS_LIMIT, "TENSORS tensor %" PRIu32 ": dims[%" PRIu32 "] %" PRIu32
                           " exceeds MAX_DIM %u", i, d, t->dims[d], EM_MAX_DIM);
        /* each factor <= 2^24 and we stop once past 2^31: the product never overflows 64 bits,
         * but keep the checked form so the reasoning does not have to be redone if limits change */
        if (!em_mul_u64(numel, t->dims[d], &numel) || numel > EM_MAX_TENSOR_ELEMENTS)
            return em_fail(err, EM_STATUS_LIMIT, "TENSORS tensor %" PRIu32 ": dims[0..%" PRIu32 "] hold more than "
                           "MAX_TENSOR_ELEMENTS (%u) elements", i, d, EM_MAX_TENSOR_ELEMENTS);
    }
    t->numel = (uint32_t)numel;
    if (le32(rec + 28) != 0)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": reserved is %" PRIu32 ", expected 0", i,
                       le32(rec + 28));
    if (t->dtype == EM_DTYPE_F32) {
        if (t->bits != 32)
            return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": F32 tensor with bits %" PRIu32
                           ", expected 32", i, t->bits);
        expected_nbytes = 4u * numel;
    } else {
        if (t->bits < 1 || t->bits > 16)
            return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": IDX tensor with bits %" PRIu32
                           " outside 1..16", i, t->bits);
        expected_nbytes = (numel * t->bits + 7u) / 8u; /* < 2^35: no overflow */
    }
    if (nbytes != expected_nbytes)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": nbytes %" PRIu64 ", expected %" PRIu64
                       " for %" PRIu64 " elements of %" PRIu32 " bits", i, nbytes, expected_nbytes, numel, t->bits);
    if (offset != expected_offset)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": offset %" PRIu64 ", expected %" PRIu64
                       " (tensor 0 at 0, each next one at align(end of the previous))", i, offset, expected_offset);
    end = offset + nbytes; /* offset <= DATA size (checked for the previous tensor), nbytes < 2^35 */
    if (end > (uint64_t)data->size)
        return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": data [%" PRIu64 ", %" PRIu64
                       ") extends past the end of DATA (%zu bytes)", i, offset, end, data->size);
    t->data = data->data + (size_t)offset;
    t->nbytes = (size_t)nbytes;
    if (t->dtype == EM_DTYPE_IDX) {
        const uint32_t used_bits = (uint32_t)((numel * t->bits) % 8u);
        if (used_bits != 0 && (t->data[t->nbytes - 1] >> used_bits) != 0)
            return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": unused bits of the last byte are "
                           "not zero (0x%02X)", i, t->data[t->nbytes - 1]);
    }
    return EM_STATUS_OK;
}

static em_status parse_tensors(em_loader *L, em_error *err)
{
    em_model *m = L->model;
    const em_span span = section_span(L, EM_SECTION_TENSORS);
    const em_span data = section_span(L, EM_SECTION_DATA);
    em_reader r;
    uint32_t count, i;
    size_t prev_end = 0, k;
    em_status st;

    reader_init(&r, span.data, span.size, "TENSORS");
    st = read_u32(&r, &count, "the tensor count", err);
    if (st != EM_STATUS_OK) return st;
    /* 0 is valid: a graph of pools, reshapes and activations has no tensors (DATA is then empty) */
    if (count > EM_MAX_TENSORS)
        return em_fail(err, EM_STATUS_LIMIT, "TENSORS: count %" PRIu32 " exceeds MAX_TENSORS %u", count,
                       EM_MAX_TENSORS);
    if ((size_t)count > (r.size - r.pos) / EM_TENSOR_RECORD_BYTES)
        return em_fail(err, EM_STATUS_TRUNCATED, "TENSORS: %" PRIu32 " records need %zu bytes, the section has %zu "
                       "left: truncated", count, (size_t)count * EM_TENSOR_RECORD_BYTES, r.size - r.pos);
    m->tensors = (em_tensor *)em_alloc_array(&m->allocator, count, sizeof *m->tensors, "tensors", &st, err);
    if (m->tensors == NULL) return st;
    m->tensor_count = count;

    r.record_kind = "tensor";
    for (i = 0; i < count; ++i) {
        const uint8_t *rec;
        size_t offset;
        r.record = i;
        st = read_bytes(&r, EM_TENSOR_RECORD_BYTES, &rec, "the 48-byte record", err);
        if (st != EM_STATUS_OK) return st;
        if (!em_align_size(prev_end, EM_ALIGNMENT, &offset))
            return em_fail(err, EM_STATUS_CORRUPT, "TENSORS tensor %" PRIu32 ": offset overflows", i);
        st = parse_tensor_record(m, i, rec, &data, offset, err);
        if (st != EM_STATUS_OK) return st;
        for (k = prev_end; k < offset; ++k)
            if (data.data[k] != 0)
                return em_fail(err, EM_STATUS_CORRUPT, "DATA offset %zu: padding byte before tensor %" PRIu32
                               " is 0x%02X, padding must be zero", k, i, data.data[k]);
        prev_end = offset + m->tensors[i].nbytes;
    }
    r.record_kind = NULL;
    st = expect_section_end(&r, "last tensor record", err);
    if (st != EM_STATUS_OK) return st;
    if (data.size != prev_end)
        return em_fail(err, EM_STATUS_CORRUPT, "DATA: %zu bytes, but the last tensor ends at %zu", data.size, prev_end);
    return EM_STATUS_OK;
}


/* ---------------------------------------------------------------------------------------------
 * The whole file, in order
 * --------------------------------------------------------------------------------------------- */

em_status em_parse_file(em_loader *L, const uint8_t *data, size_t size, em_error *err)
{
    uint32_t section_count = 0;
    em_status st;
    if ((st = parse_header(data, size, &L->model->version, &section_count, err)) != EM_STATUS_OK) return st;
    if ((st = parse_sections(L, data, size, section_count, err)) != EM_STATUS_OK) return st;
    if ((st = parse_meta(L, err)) != EM_STATUS_OK) return st;
    if ((st = parse_tasks(L, err)) != EM_STATUS_OK) return st;
    if ((st = parse_graph(L, err)) != EM_STATUS_OK) return st;
    return parse_tensors(L, err);
}

/* ---------------------------------------------------------------------------------------------
 * Node names (META node.N.name), once the graph is known
 * --------------------------------------------------------------------------------------------- */

/* node.N.name for an existing node N (META validated it as a string), or 0. */
static int node_name_entry(const em_model *m, const em_meta_entry *e, uint32_t *node)
{
    const uint8_t *suffix;
    size_t len;
    return match_numbered_key(e, EM_KEY_NODE_PREFIX, node, &suffix, &len) && suffix_is(suffix, len, "name") &&
           *node < m->node_count;
}

em_status em_parse_node_names(em_loader *L, em_error *err)
{
    em_model *m = L->model;
    size_t total = 0, cursor = 0;
    uint32_t i, n;
    em_status st;

    for (i = 0; i < L->meta_count; ++i)
        if (node_name_entry(m, &L->meta[i], &n)) total += (size_t)L->meta[i].value_len + 1u; /* <= META size */
    if (total == 0) return EM_STATUS_OK;
    m->name_pool = (char *)em_alloc_array(&m->allocator, total, 1, "node names", &st, err);
    if (m->name_pool == NULL) return st;
    for (i = 0; i < L->meta_count; ++i) {
        const em_meta_entry *e = &L->meta[i];
        if (!node_name_entry(m, e, &n)) continue;
        memcpy(m->name_pool + cursor, e->value, e->value_len);
        m->name_pool[cursor + e->value_len] = '\0';
        m->nodes[n].name = m->name_pool + cursor;
        cursor += (size_t)e->value_len + 1u;
    }
    return EM_STATUS_OK;
}
