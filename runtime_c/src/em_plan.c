/* The context plan: where every buffer of a run lives in the context arena, decided once at load.
 *
 * Buffers: each node's output value, each node's scratch, and each table group's shared table.
 * Lifetimes are intervals of node positions in GRAPH order (the order em_run_all runs; em_run_task
 * runs a subsequence of it, which keeps every interval valid):
 *   output of node i     [i, last node reading it]; a task output lives to the end of the run,
 *                        because em_run_* copy the logits out after the last node;
 *   scratch of node i    [i, i];
 *   table of a group     [its first node, its last node].
 * Buffers whose lifetimes overlap get disjoint bytes; the others may share. Placement is greedy by
 * size (largest first, each at the lowest offset that does not collide with an already placed,
 * overlapping buffer), the strategy of TFLite's arena planner: near optimal for chains of layers.
 *
 * Table groups: LUT nodes that read the same value with the same codebook tensor, r, C and table
 * layout (strides, pads, single band) compute the same table; the first of them to run in a run
 * builds it in the group's buffer and the others reuse it (em_runtime.c resets the "ready" flags at
 * the start of every run). */
#include <stdlib.h>
#include <string.h>

#include "em_internal.h"

typedef struct plan_buffer {
    size_t bytes;
    uint32_t first, last; /* lifetime, node positions */
    size_t offset;
    uint32_t kind; /* 0 output, 1 scratch, 2 table group */
    uint32_t id;   /* node or group */
} plan_buffer;

static int tables_compatible(const em_node *a, const em_node *b)
{
    return a->kernel == b->kernel && a->op == b->op && a->input == b->input && a->weight_id == b->weight_id &&
           a->seg_len == b->seg_len && a->codewords == b->codewords && a->segments == b->segments &&
           a->stride_h == b->stride_h && a->stride_w == b->stride_w && a->pad_top == b->pad_top &&
           a->pad_left == b->pad_left && a->pad_bottom == b->pad_bottom && a->pad_right == b->pad_right &&
           a->table_bytes == b->table_bytes;
}

/* Groups nodes with compatible shareable tables; returns the number of groups. */
static uint32_t find_table_groups(em_model *m)
{
    uint32_t i, j, groups = 0;
    for (i = 0; i < m->node_count; ++i) m->nodes[i].table_group = EM_NONE;
    for (i = 0; i < m->node_count; ++i) {
        em_node *n = &m->nodes[i];
        if (!n->table_shareable || n->table_bytes == 0) continue;
        for (j = 0; j < i; ++j) {
            em_node *earlier = &m->nodes[j];
            if (!earlier->table_shareable || !tables_compatible(earlier, n)) continue;
            if (earlier->table_group == EM_NONE) earlier->table_group = groups++;
            n->table_group = earlier->table_group;
            break;
        }
    }
    return groups;
}

static int by_size_descending(const void *pa, const void *pb)
{
    const plan_buffer *a = (const plan_buffer *)pa, *b = (const plan_buffer *)pb;
    if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    return a->kind != b->kind ? (a->kind < b->kind ? -1 : 1) : (a->id < b->id ? -1 : (a->id > b->id ? 1 : 0));
}

static int by_offset(const void *pa, const void *pb)
{
    const plan_buffer *a = *(const plan_buffer *const *)pa, *b = *(const plan_buffer *const *)pb;
    return a->offset < b->offset ? -1 : (a->offset > b->offset ? 1 : 0);
}

em_status em_plan_context(em_model *m, em_error *err)
{
    const uint32_t end = m->node_count; /* "to the end of the run" */
    plan_buffer *buffers, **overlapping;
    size_t count = 0, i, j, bytes, arena = 0;
    uint32_t groups, n, t;

    /* last uses */
    for (n = 0; n < m->node_count; ++n) m->nodes[n].last_use = n;
    for (n = 0; n < m->node_count; ++n) {
        const uint32_t v = m->nodes[n].input;
        if (v >= m->input_count && m->nodes[v - m->input_count].last_use < n) m->nodes[v - m->input_count].last_use = n;
    }
    for (t = 0; t < m->task_count; ++t)
        if (m->tasks[t].output >= m->input_count) m->nodes[m->tasks[t].output - m->input_count].last_use = end;

    /* table groups */
    groups = find_table_groups(m);
    if (groups > 0) {
        m->table_groups = (em_table_group *)m->allocator.alloc(m->allocator.user, groups * sizeof(em_table_group));
        if (m->table_groups == NULL)
            return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for table groups",
                           (size_t)groups * sizeof(em_table_group));
        m->table_group_count = groups;
        for (i = 0; i < groups; ++i) {
            m->table_groups[i].first_node = EM_NONE;
            m->table_groups[i].last_node = 0;
            m->table_groups[i].bytes = 0;
            m->table_groups[i].offset = 0;
        }
        for (n = 0; n < m->node_count; ++n) {
            em_table_group *g;
            if (m->nodes[n].table_group == EM_NONE) continue;
            g = &m->table_groups[m->nodes[n].table_group];
            if (g->first_node == EM_NONE) g->first_node = n;
            g->last_node = n;
            g->bytes = m->nodes[n].table_bytes;
        }
    }

    /* buffers: 2 per node + 1 per group (node_count <= MAX_NODES: no overflow) */
    bytes = ((size_t)2 * m->node_count + groups) * (sizeof(plan_buffer) + sizeof(plan_buffer *));
    buffers = (plan_buffer *)m->allocator.alloc(m->allocator.user, bytes);
    if (buffers == NULL)
        return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for the context plan", bytes);
    overlapping = (plan_buffer **)(void *)(buffers + (size_t)2 * m->node_count + groups);

    m->max_scratch_bytes = 0;
    for (n = 0; n < m->node_count; ++n) {
        em_node *node = &m->nodes[n];
        size_t out_bytes, scratch = node->scratch_bytes;
        if (node->table_group != EM_NONE) scratch -= node->table_bytes; /* the table lives in the group */
        if (scratch > m->max_scratch_bytes) m->max_scratch_bytes = scratch;
        node->output_offset = node->scratch_offset = 0;
        /* output: numel <= MAX_VALUE_ELEMENTS, so 4·numel + 63 fits in size_t */
        out_bytes = ((size_t)node->out.numel * sizeof(float) + EM_CONTEXT_ALIGNMENT - 1u) &
                    ~(size_t)(EM_CONTEXT_ALIGNMENT - 1u);
        buffers[count].bytes = out_bytes;
        buffers[count].first = n;
        buffers[count].last = node->last_use;
        buffers[count].kind = 0;
        buffers[count].id = n;
        ++count;
        if (scratch > 0) {
            if (!em_align_size(scratch, EM_CONTEXT_ALIGNMENT, &buffers[count].bytes)) {
                m->allocator.free(m->allocator.user, buffers);
                return em_fail_node(err, EM_STATUS_LIMIT, node, "scratch of %zu bytes does not fit in size_t",
                                    scratch);
            }
            buffers[count].first = buffers[count].last = n;
            buffers[count].kind = 1;
            buffers[count].id = n;
            ++count;
        }
    }
    for (i = 0; i < groups; ++i) {
        buffers[count].bytes = m->table_groups[i].bytes; /* a multiple of 64 (the kernels' plan) */
        buffers[count].first = m->table_groups[i].first_node;
        buffers[count].last = m->table_groups[i].last_node;
        buffers[count].kind = 2;
        buffers[count].id = (uint32_t)i;
        ++count;
    }

    qsort(buffers, count, sizeof *buffers, by_size_descending);
    for (i = 0; i < count; ++i) {
        plan_buffer *b = &buffers[i];
        size_t overlaps = 0, offset = 0, k;
        for (j = 0; j < i; ++j)
            if (buffers[j].first <= b->last && b->first <= buffers[j].last) overlapping[overlaps++] = &buffers[j];
        qsort(overlapping, overlaps, sizeof *overlapping, by_offset);
        for (k = 0; k < overlaps; ++k) {
            const plan_buffer *o = overlapping[k];
            if (offset + b->bytes <= o->offset) break; /* fits in the gap before o */
            if (o->offset + o->bytes > offset) offset = o->offset + o->bytes;
        }
        b->offset = offset;
        if (offset > SIZE_MAX - b->bytes) {
            m->allocator.free(m->allocator.user, buffers);
            return em_fail(err, EM_STATUS_LIMIT, "context: the planned arena does not fit in size_t");
        }
        if (offset + b->bytes > arena) arena = offset + b->bytes;
    }
    for (i = 0; i < count; ++i) {
        const plan_buffer *b = &buffers[i];
        if (b->kind == 0) m->nodes[b->id].output_offset = b->offset;
        else if (b->kind == 1) m->nodes[b->id].scratch_offset = b->offset;
        else m->table_groups[b->id].offset = b->offset;
    }
    m->arena_bytes = arena;
    m->allocator.free(m->allocator.user, buffers);
    return EM_STATUS_OK;
}
