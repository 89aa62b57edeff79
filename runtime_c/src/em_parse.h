/* Private interface between the parser (em_parse.c: reading the file's sections into records) and the
 * model builder (em_loader.c: ops' prepare(), tasks, kernels, context plan). */
#ifndef EDGEMERGE_EM_PARSE_H
#define EDGEMERGE_EM_PARSE_H

#include "em_internal.h"

typedef struct em_span {
    const uint8_t *data;
    size_t size;
} em_span;

typedef struct em_meta_entry {
    const uint8_t *key;
    uint32_t key_len;
    uint32_t type;
    const uint8_t *value; /* 8 bytes, or the string's bytes */
    uint32_t value_len;
    uint32_t position; /* entry number in the file, for messages */
} em_meta_entry;

#define EM_REQUIRED_SECTION_COUNT 5u

typedef struct em_loader {
    em_model *model;
    em_span sections[EM_REQUIRED_SECTION_COUNT]; /* META, TASKS, GRAPH, TENSORS, DATA */
    em_meta_entry *meta;                         /* temporary: freed before em_model_load() returns */
    uint32_t meta_count;
} em_loader;

/* count × elem zeroed bytes from the allocator, with the product checked; NULL with *st set on failure. */
void *em_alloc_array(const em_allocator *a, size_t count, size_t elem, const char *what, em_status *st,
                     em_error *err);
/* Steps 1 and 2 of em_model_load: header, section table, META, TASKS, GRAPH (with each node's op
 * registration), TENSORS and DATA into L->model; L->meta keeps META's entries for em_parse_node_names. */
em_status em_parse_file(em_loader *L, const uint8_t *data, size_t size, em_error *err);
/* Copies META's node.N.name strings into the model's name pool (after the graph is known). */
em_status em_parse_node_names(em_loader *L, em_error *err);

#endif /* EDGEMERGE_EM_PARSE_H */
