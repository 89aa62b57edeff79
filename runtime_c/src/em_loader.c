/* em_model_load(): validates a whole .emm buffer against docs/FORMAT.md before trusting any of it.
 *
 * Order of work (each step only relies on what earlier steps proved); em_parse.c does steps 1 and 2 and
 * the names of step 4, this file builds the model from what they read:
 *   1. header and section table (em_parse.c);
 *   2. META, TASKS, GRAPH, TENSORS + DATA, each record's own fields (em_parse.c);
 *   3. every node through its op's prepare() in node order (tensor references, dims, recomputed
 *      output shapes, index values < C), then the tasks against the graph, then clustered depthwise
 *      weights decoded (they run as DEPTHWISE_CONV2D);
 *   4. the run plan: each task's nodes, node names;
 *   5. a kernel per node (em_kernel_choose, from the requested kernel set), its plan (scratch) and
 *      packed data (e.g. unpacked indices, one allocation for all nodes), then the context plan
 *      (em_plan.c: liveness-based buffer offsets, shared LUT tables) and the context size.
 *
 * Conventions: every read of the file goes through read_bytes() (em_parse.c), which fails with
 * "truncated"; every failure returns at the line that found it, through em_fail(), with a message naming
 * the section, record and field. All size arithmetic is checked. Memory comes only from the caller's
 * allocator, and a failed load frees everything it allocated. */
#include <stdlib.h>
#include <string.h>

#include "em_kernels.h"
#include "em_parse.h"

/* ---------------------------------------------------------------------------------------------
 * 3. Nodes through their ops, tasks against the graph
 * --------------------------------------------------------------------------------------------- */

static em_status prepare_nodes(em_model *m, em_error *err)
{
    uint32_t i;
    for (i = 0; i < m->node_count; ++i) {
        em_node *node = &m->nodes[i];
        em_status st;
        /* the values read are inputs or earlier nodes' outputs, whose shapes prepare() verified */
        if (node->input_count < node->reg->min_inputs || node->input_count > node->reg->max_inputs) {
            if (node->reg->min_inputs == node->reg->max_inputs)
                return em_fail_node(err, EM_STATUS_CORRUPT, node, "input_count %" PRIu32 ", the op takes %" PRIu32,
                                    node->input_count, node->reg->min_inputs);
            return em_fail_node(err, EM_STATUS_CORRUPT, node, "input_count %" PRIu32 ", the op takes %" PRIu32
                                " to %" PRIu32, node->input_count, node->reg->min_inputs, node->reg->max_inputs);
        }
        node->in = m->value_shapes[node->input];
        node->value_shapes = m->value_shapes;
        st = node->reg->prepare(m, node, err);
        if (st != EM_STATUS_OK) return st;
        m->value_shapes[m->input_count + i] = node->out;
        if (node->scratch_bytes > m->max_scratch_bytes) m->max_scratch_bytes = node->scratch_bytes;
    }
    return EM_STATUS_OK;
}

/* LUT_DEPTHWISE_CONV2D nodes: W[ky, kx, c, m] = codebook[0, index[t / r, c, m], t mod r], t = ky·KW + kx
 * (FORMAT.md "Clustered depthwise") decoded once into memory the model owns; each node's `weight` then points
 * to an F32 tensor [KH, KW, Cin, M] over it and the node runs as a DEPTHWISE_CONV2D (every depthwise kernel,
 * reference and fast, unchanged; its registration keeps the op's name for messages and profiles). prepare()
 * bounded each node's floats by MAX_TENSOR_ELEMENTS; the sum is checked here. */
static em_status decode_clustered_depthwise(em_model *m, em_error *err)
{
    size_t total = 0, at = 0;
    uint32_t i, count = 0;
    em_status st;
    for (i = 0; i < m->node_count; ++i) {
        const em_node *node = &m->nodes[i];
        if (node->op != EM_OP_LUT_DEPTHWISE_CONV2D) continue;
        if (!em_add_size(total, (size_t)node->kernel_h * node->kernel_w * node->out.c, &total))
            return em_fail_node(err, EM_STATUS_LIMIT, node, "decoded depthwise weights do not fit in size_t");
        ++count;
    }
    if (count == 0) return EM_STATUS_OK;
    m->decoded_tensors = (em_tensor *)em_alloc_array(&m->allocator, count, sizeof *m->decoded_tensors,
                                                     "decoded depthwise tensors", &st, err);
    if (m->decoded_tensors == NULL) return st;
    m->decoded_weights = (float *)em_alloc_array(&m->allocator, total, sizeof *m->decoded_weights,
                                                 "decoded depthwise weights", &st, err);
    if (m->decoded_weights == NULL) return st;
    m->packed_bytes += total * sizeof *m->decoded_weights + count * sizeof *m->decoded_tensors;
    count = 0;
    for (i = 0; i < m->node_count; ++i) {
        em_node *node = &m->nodes[i];
        em_tensor *t;
        const float *codebook;
        float *w;
        uint32_t taps, cin, cout, mult, r, c, k, tap;
        if (node->op != EM_OP_LUT_DEPTHWISE_CONV2D) continue;
        taps = node->kernel_h * node->kernel_w;
        cin = node->in.c;
        cout = node->out.c;
        mult = cout / cin;
        r = node->seg_len;
        codebook = em_tensor_f32(node->weight);
        w = m->decoded_weights + at;
        for (tap = 0; tap < taps; ++tap)
            for (c = 0; c < cin; ++c)
                for (k = 0; k < mult; ++k) {
                    const uint64_t at_index = ((uint64_t)(tap / r) * cin + c) * mult + k;
                    const uint32_t idx = em_idx_get(node->index_map->data, node->index_map->bits, at_index);
                    w[(size_t)tap * cout + (size_t)c * mult + k] = codebook[(size_t)idx * r + tap % r];
                }
        t = &m->decoded_tensors[count++];
        memset(t, 0, sizeof *t);
        t->dtype = EM_DTYPE_F32;
        t->ndim = 4;
        t->dims[0] = node->kernel_h;
        t->dims[1] = node->kernel_w;
        t->dims[2] = cin;
        t->dims[3] = mult;
        t->bits = 32;
        t->numel = taps * cout;
        t->nbytes = (size_t)t->numel * sizeof(float);
        t->data = (const uint8_t *)w;
        node->weight = t;
        node->op = EM_OP_DEPTHWISE_CONV2D;
        at += t->numel;
    }
    return EM_STATUS_OK;
}

/* Marks in need[] (node_count bytes) the nodes task output `output` is computed from, walking every input
 * backwards (node order is topological, so one backward pass suffices: O(nodes + edges)); returns the
 * bit set of graph inputs they read (MAX_INPUTS = 64 fits one word) and their count in *steps. */
static uint64_t mark_ancestors(const em_model *m, uint32_t output, unsigned char *need, uint32_t *steps)
{
    uint64_t inputs_read = 0;
    uint32_t n, k;
    *steps = 0;
    memset(need, 0, m->node_count);
    if (output < m->input_count) return (uint64_t)1 << output;
    need[output - m->input_count] = 1;
    for (n = m->node_count; n-- > 0;) {
        const em_node *node = &m->nodes[n];
        if (!need[n]) continue;
        ++*steps;
        for (k = 0; k < node->input_count; ++k) {
            const uint32_t v = node->inputs[k];
            if (v < m->input_count) inputs_read |= (uint64_t)1 << v;
            else need[v - m->input_count] = 1;
        }
    }
    return inputs_read;
}

static em_status check_tasks(em_model *m, em_error *err)
{
    size_t plan_total = 0, cursor = 0;
    unsigned char *need;
    uint32_t i;
    em_status st;

    need = (unsigned char *)em_alloc_array(&m->allocator, m->node_count, 1, "task plans", &st, err);
    if (need == NULL) return st;
    for (i = 0; i < m->task_count; ++i) {
        em_task *t = &m->tasks[i];
        const em_shape *out;
        uint32_t steps = 0, other;
        uint64_t inputs_read;
        if (t->input >= m->input_count) {
            m->allocator.free(m->allocator.user, need);
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): input %" PRIu32
                           " does not exist (GRAPH has %" PRIu32 " inputs)", i, t->name, t->input, m->input_count);
        }
        if (t->output >= m->value_count) {
            m->allocator.free(m->allocator.user, need);
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): output value %" PRIu32
                           " does not exist (GRAPH has %" PRIu32 " values)", i, t->name, t->output, m->value_count);
        }
        out = &m->value_shapes[t->output];
        if (t->classes != out->numel) {
            m->allocator.free(m->allocator.user, need);
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): classes %" PRIu32 ", but output "
                           "value %" PRIu32 " (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ") has %" PRIu32 " elements", i,
                           t->name, t->classes, t->output, out->h, out->w, out->c, out->numel);
        }
        /* The task is fed one graph input, so every value its output is computed from must come from it. */
        inputs_read = mark_ancestors(m, t->output, need, &steps);
        if (inputs_read != (uint64_t)1 << t->input) {
            const uint64_t others = inputs_read & ~((uint64_t)1 << t->input);
            for (other = 0; other < 64 && !(others >> other & 1u); ++other) continue;
            m->allocator.free(m->allocator.user, need);
            if (others == 0) /* defensive: every chain ends at a graph input */
                return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): output value %" PRIu32
                               " does not read the task's input %" PRIu32, i, t->name, t->output, t->input);
            return em_fail(err, EM_STATUS_CORRUPT, "TASKS task %" PRIu32 " ('%s'): output value %" PRIu32
                           " is computed from graph input %" PRIu32 ", not from the task's input %" PRIu32, i,
                           t->name, t->output, other, t->input);
        }
        t->plan_node_count = steps;
        plan_total += steps; /* <= MAX_TASKS × MAX_NODES */
    }
    m->plan_nodes = (uint32_t *)em_alloc_array(&m->allocator, plan_total, sizeof *m->plan_nodes, "task plans", &st, err);
    if (m->plan_nodes == NULL) {
        m->allocator.free(m->allocator.user, need);
        return st;
    }
    for (i = 0; i < m->task_count; ++i) {
        em_task *t = &m->tasks[i];
        uint32_t n, steps;
        t->first_plan_node = (uint32_t)cursor;
        (void)mark_ancestors(m, t->output, need, &steps);
        for (n = 0; n < m->node_count; ++n) /* node order; em_plan.c sorts it by schedule step */
            if (need[n]) m->plan_nodes[cursor++] = n;
    }
    m->allocator.free(m->allocator.user, need);
    return EM_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points
 * --------------------------------------------------------------------------------------------- */

/* The runtime reads float32 tensors in place, so the host must store floats as the file does. */
static int host_is_little_endian_ieee754(void)
{
    const float f = -1.5f;
    const uint32_t one = 1;
    uint32_t bits;
    uint8_t first;
    memcpy(&bits, &f, sizeof bits);
    memcpy(&first, &one, 1);
    return bits == EM_SENTINEL_F32_BITS && first == 1;
}

/* ---------------------------------------------------------------------------------------------
 * 5. Kernels: one per node from the requested set, their plans and packed data
 * --------------------------------------------------------------------------------------------- */

static em_status choose_kernels(em_model *m, const em_kernel *force, em_error *err)
{
    size_t total = 0, at;
    unsigned char *base;
    uint32_t i;
    em_status st;
    for (i = 0; i < m->node_count; ++i) /* the int8-activation kernels' tile choice (lut_int8_act.c) */
        if (m->nodes[i].flags & EM_NODE_FLAG_INT8_ACT) {
            m->x86_vnni_sets = em_cpu_x86_vnni_sets();
            break;
        }
    for (i = 0; i < m->node_count; ++i) {
        em_node *node = &m->nodes[i];
        if (force != NULL && force->op == node->op && (force->supports == NULL || force->supports(node)))
            node->kernel = force;
        else
            node->kernel = em_kernel_choose(m, node, m->kernels);
        node->packed = NULL;
        node->packed_bytes = 0;
        node->table_bytes = 0;
        node->table_shareable = 0;
        if (node->kernel->plan != NULL && (st = node->kernel->plan(m, node, err)) != EM_STATUS_OK) return st;
        if (!em_align_size(total, EM_CONTEXT_ALIGNMENT, &total) || !em_add_size(total, node->packed_bytes, &total))
            return em_fail_node(err, EM_STATUS_LIMIT, node, "packed kernel data does not fit in size_t");
    }
    if (total == 0) return EM_STATUS_OK;
    /* one allocation for every node's packed data; the allocator promises 16-byte alignment, the
     * kernels want 64 (cache lines, vector loads): over-allocate and align inside */
    if (!em_add_size(total, EM_CONTEXT_ALIGNMENT, &total))
        return em_fail(err, EM_STATUS_LIMIT, "packed kernel data does not fit in size_t");
    m->packed_arena = (unsigned char *)em_alloc_array(&m->allocator, total, 1, "packed kernel data", &st, err);
    if (m->packed_arena == NULL) return st;
    m->packed_bytes += total;
    /* offsets are aligned relative to the first 64-byte boundary in the block (aligning them relative to
     * the block itself gave 16 mod 64 addresses when the allocator returned 16 mod 64) */
    base = m->packed_arena +
           (EM_CONTEXT_ALIGNMENT - (size_t)((uintptr_t)m->packed_arena % EM_CONTEXT_ALIGNMENT)) % EM_CONTEXT_ALIGNMENT;
    at = 0;
    for (i = 0; i < m->node_count; ++i) {
        em_node *node = &m->nodes[i];
        at = (at + EM_CONTEXT_ALIGNMENT - 1u) & ~(size_t)(EM_CONTEXT_ALIGNMENT - 1u);
        if (node->packed_bytes == 0) continue;
        node->packed = base + at;
        at += node->packed_bytes;
        node->kernel->pack(m, node);
    }
    return EM_STATUS_OK;
}

static em_status load(em_loader *L, const uint8_t *data, size_t size, const em_kernel *force, em_error *err)
{
    em_model *m = L->model;
    em_status st;

    if ((st = em_parse_file(L, data, size, err)) != EM_STATUS_OK) return st;
    if ((st = prepare_nodes(m, err)) != EM_STATUS_OK) return st;
    if ((st = check_tasks(m, err)) != EM_STATUS_OK) return st;
    if ((st = decode_clustered_depthwise(m, err)) != EM_STATUS_OK) return st;
    if ((st = em_parse_node_names(L, err)) != EM_STATUS_OK) return st;
    if ((st = choose_kernels(m, force, err)) != EM_STATUS_OK) return st;
    if ((st = em_plan_context(m, err)) != EM_STATUS_OK) return st;
    if (!em_context_layout(m, NULL, &m->context_bytes, NULL))
        return em_fail(err, EM_STATUS_LIMIT, "context: the planned arena of %zu bytes plus bookkeeping does not fit "
                       "in size_t", m->arena_bytes);
    if (m->context_bytes > (size_t)EM_MAX_CONTEXT_BYTES)
        return em_fail(err, EM_STATUS_LIMIT, "context: a run with the %s kernels needs %zu bytes, more than "
                       "EM_MAX_CONTEXT_BYTES (%zu; the reference kernels need the most)",
                       em_kernels_name(m->kernels), m->context_bytes, (size_t)EM_MAX_CONTEXT_BYTES);
    return EM_STATUS_OK;
}

/* The kernel set em_model_load uses: EM_KERNELS from the environment where the platform has one. */
static em_status default_kernels(uint32_t *kernels, em_error *err)
{
    *kernels = EM_KERNELS_AUTO;
#if !defined(EM_PLATFORM_NO_GETENV)
    {
        const char *name = getenv("EM_KERNELS");
        if (name != NULL && name[0] != '\0' && !em_kernels_from_name(name, kernels))
            return em_fail(err, EM_STATUS_BAD_ARGUMENT, "environment variable EM_KERNELS='%s' names no kernel set "
                           "(auto, ref, generic, sse2, avx2, avx512, neon)", name);
    }
#endif
    return EM_STATUS_OK;
}

static em_status load_model(const void *data, size_t size, const em_allocator *allocator, uint32_t kernels,
                            uint32_t flags, const em_kernel *force, em_model **out_model, em_error *err);

em_status em_model_load(const void *data, size_t size, const em_allocator *allocator, em_model **out_model,
                        em_error *err)
{
    em_load_options options;
    em_status st;
    if (out_model != NULL) *out_model = NULL;
    memset(&options, 0, sizeof options);
    if ((st = default_kernels(&options.kernels, err)) != EM_STATUS_OK) return st;
    return em_model_load_ex(data, size, allocator, &options, out_model, err);
}

em_status em_model_load_ex(const void *data, size_t size, const em_allocator *allocator,
                           const em_load_options *options, em_model **out_model, em_error *err)
{
    uint32_t kernels = EM_KERNELS_AUTO, flags = 0, i;
    if (out_model != NULL) *out_model = NULL;
    if (options != NULL) {
        for (i = 0; i < sizeof options->reserved / sizeof options->reserved[0]; ++i)
            if (options->reserved[i] != 0)
                return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: options.reserved[%u] must be 0",
                               (unsigned)i);
        if ((options->flags & ~(EM_LOAD_NO_RUN_GROUPS | EM_LOAD_NO_FUSED_ADD | EM_LOAD_PARALLEL_TASKS)) != 0)
            return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: unknown options.flags 0x%" PRIX32,
                           options->flags);
        kernels = options->kernels;
        flags = options->flags;
    }
    return load_model(data, size, allocator, kernels, flags, NULL, out_model, err);
}

em_status em_model_load_forced(const void *data, size_t size, const em_allocator *allocator, uint32_t kernels,
                               const em_kernel *force, em_model **out_model, em_error *err)
{
    return load_model(data, size, allocator, kernels, 0, force, out_model, err);
}

static em_status load_model(const void *data, size_t size, const em_allocator *allocator, uint32_t kernels,
                            uint32_t flags, const em_kernel *force, em_model **out_model, em_error *err)
{
    em_allocator a;
    em_loader L;
    em_status st;

    if (out_model != NULL) *out_model = NULL;
    if (out_model == NULL) return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: out_model is NULL");
    if (kernels >= EM_KERNELS_COUNT)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: unknown kernel set %u", (unsigned)kernels);
    if (!em_kernels_available(kernels))
        return em_fail(err, EM_STATUS_UNSUPPORTED, "em_model_load: kernel set '%s' is not available on this CPU or "
                       "in this build (%s)", em_kernels_name(kernels), em_runtime_cpu_features());
    if (data == NULL) return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: data is NULL");
    if (allocator != NULL && (allocator->alloc == NULL || allocator->free == NULL))
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_model_load: allocator needs both alloc and free");
    if ((uint64_t)size > EM_MAX_FILE_BYTES)
        return em_fail(err, EM_STATUS_LIMIT, "em_model_load: a buffer of %zu bytes exceeds MAX_FILE_BYTES %" PRIu64,
                       size, (uint64_t)EM_MAX_FILE_BYTES);
    if (((uintptr_t)data & 3u) != 0)
        return em_fail(err, EM_STATUS_MISALIGNED, "em_model_load: buffer at %p is not 4-byte aligned (float32 "
                       "tensors are used in place; 64-byte alignment is recommended)", data);
    if (!host_is_little_endian_ieee754())
        return em_fail(err, EM_STATUS_UNSUPPORTED, "em_model_load: this host does not store float32 as "
                       "little-endian IEEE-754, so tensors cannot be used in place");

    a = em_allocator_or_default(allocator);
    memset(&L, 0, sizeof L);
    L.model = (em_model *)em_alloc_array(&a, 1, sizeof *L.model, "the model", &st, err);
    if (L.model == NULL) return st;
    L.model->allocator = a;
    L.model->kernels = em_kernels_resolve(kernels);
    L.model->load_flags = flags;
    L.model->data = (const uint8_t *)data;
    L.model->size = size;

    st = load(&L, (const uint8_t *)data, size, force, err);
    if (L.meta != NULL) a.free(a.user, L.meta);
    if (st != EM_STATUS_OK) {
        em_model_free(L.model);
        return st;
    }
    *out_model = L.model;
    em_error_clear(err);
    return EM_STATUS_OK;
}

void em_model_free(em_model *model)
{
    em_allocator a;
    if (model == NULL) return;
    a = model->allocator;
    if (model->value_shapes) a.free(a.user, model->value_shapes);
    if (model->nodes) a.free(a.user, model->nodes);
    if (model->node_inputs) a.free(a.user, model->node_inputs);
    if (model->tensors) a.free(a.user, model->tensors);
    if (model->tasks) a.free(a.user, model->tasks);
    if (model->plan_nodes) a.free(a.user, model->plan_nodes);
    if (model->name_pool) a.free(a.user, model->name_pool);
    if (model->packed_arena) a.free(a.user, model->packed_arena);
    if (model->decoded_weights) a.free(a.user, model->decoded_weights);
    if (model->decoded_tensors) a.free(a.user, model->decoded_tensors);
    if (model->table_groups) a.free(a.user, model->table_groups);
    if (model->schedule) a.free(a.user, model->schedule);
    if (model->run_groups) a.free(a.user, model->run_groups);
    a.free(a.user, model);
}
