/* Running a loaded model: context layout, em_run_task / em_run_all, model accessors.
 *
 * A context is laid out once in caller memory; a run never allocates and touches no global state,
 * so any number of contexts (one per thread) can run the same model concurrently. */
#include <stdio.h>
#include <string.h>

#include "em_kernels.h"
#include "em_threads.h"

/* ---------------------------------------------------------------------------------------------
 * Model accessors
 * --------------------------------------------------------------------------------------------- */

uint32_t em_model_format_version(const em_model *model)
{
    return model != NULL ? model->version : 0;
}

uint32_t em_model_task_count(const em_model *model)
{
    return model != NULL ? model->task_count : 0;
}

em_status em_model_task_info(const em_model *model, uint32_t task, em_task_info *out)
{
    const em_task *t;
    const em_shape *in;
    if (model == NULL || out == NULL || task >= model->task_count) return EM_STATUS_BAD_ARGUMENT;
    t = &model->tasks[task];
    in = &model->value_shapes[t->input];
    out->name = t->name;
    out->input_index = t->input;
    out->input_h = in->h;
    out->input_w = in->w;
    out->input_c = in->c;
    out->classes = t->classes;
    return EM_STATUS_OK;
}

int32_t em_model_find_task(const em_model *model, const char *name)
{
    uint32_t i;
    if (model == NULL || name == NULL) return -1;
    for (i = 0; i < model->task_count; ++i)
        if (strcmp(model->tasks[i].name, name) == 0) return (int32_t)i;
    return -1;
}

uint32_t em_model_input_count(const em_model *model)
{
    return model != NULL ? model->input_count : 0;
}

em_status em_model_input_shape(const em_model *model, uint32_t input, uint32_t *h, uint32_t *w, uint32_t *c)
{
    if (model == NULL || input >= model->input_count) return EM_STATUS_BAD_ARGUMENT;
    if (h != NULL) *h = model->value_shapes[input].h;
    if (w != NULL) *w = model->value_shapes[input].w;
    if (c != NULL) *c = model->value_shapes[input].c;
    return EM_STATUS_OK;
}

uint32_t em_model_node_count(const em_model *model)
{
    return model != NULL ? model->node_count : 0;
}

uint32_t em_model_run_group_count(const em_model *model)
{
    return model != NULL ? model->run_group_count : 0;
}

em_status em_model_node_info(const em_model *model, uint32_t node, em_node_info *out)
{
    const em_node *n;
    if (model == NULL || out == NULL || node >= model->node_count) return EM_STATUS_BAD_ARGUMENT;
    n = &model->nodes[node];
    out->op = n->op;
    out->input = n->input;
    out->out_h = n->out.h;
    out->out_w = n->out.w;
    out->out_c = n->out.c;
    out->seg_len = n->seg_len;
    out->codewords = n->codewords;
    out->name = n->name;
    out->kernel = n->kernel->name;
    out->run_group = n->run_group;
    out->run_group_fused = n->run_group != EM_NONE && model->run_groups[n->run_group].fused ? 1u : 0u;
    out->input_count = n->input_count;
    return EM_STATUS_OK;
}

em_status em_model_node_input(const em_model *model, uint32_t node, uint32_t k, uint32_t *value)
{
    if (model == NULL || value == NULL || node >= model->node_count || k >= model->nodes[node].input_count)
        return EM_STATUS_BAD_ARGUMENT;
    *value = model->nodes[node].inputs[k];
    return EM_STATUS_OK;
}

size_t em_model_arena_bytes(const em_model *model)
{
    return model != NULL ? model->arena_bytes : 0;
}

size_t em_model_packed_bytes(const em_model *model)
{
    return model != NULL ? model->packed_bytes : 0;
}

size_t em_model_values_bytes(const em_model *model)
{
    size_t total = 0;
    uint32_t i;
    if (model == NULL) return 0;
    for (i = 0; i < model->node_count; ++i) /* <= MAX_NODES · 2^30: the loader sized the arena in size_t */
        total += ((size_t)model->nodes[i].out.numel * sizeof(float) + EM_CONTEXT_ALIGNMENT - 1u) &
                 ~(size_t)(EM_CONTEXT_ALIGNMENT - 1u);
    return total;
}

uint32_t em_model_kernels(const em_model *model)
{
    return model != NULL ? model->kernels : EM_KERNELS_REFERENCE;
}

/* ---------------------------------------------------------------------------------------------
 * Context
 * --------------------------------------------------------------------------------------------- */

/* Reserves `bytes` at the next EM_CONTEXT_ALIGNMENT boundary of *cursor; returns 0 on overflow. */
static int reserve(size_t *cursor, size_t bytes, size_t *start)
{
    if (!em_align_size(*cursor, EM_CONTEXT_ALIGNMENT, start)) return 0;
    return em_add_size(*start, bytes, cursor);
}

int em_context_layout(const em_model *model, unsigned char *base, size_t *total, em_context **out_ctx)
{
    /* One walk both measures (base == NULL) and lays out, so the size and the layout cannot disagree.
     * Offsets are relative to a 64-byte aligned base; *total includes the slack to align any base.
     * Bookkeeping first, then the arena that em_plan_context() laid out: node values share bytes
     * where their lifetimes do not overlap, so after a run only the task outputs are sure to be intact.
     * Graph inputs are read in place from the caller's arrays. */
    size_t cursor = 0, at_ctx, at_inputs, at_outputs, at_scratch, at_runs, at_profile, at_ready, at_arena, bytes;
    em_context *ctx = NULL;
    uint32_t i;

    if (!reserve(&cursor, sizeof(em_context), &at_ctx)) return 0;
    if (!em_mul_size(model->input_count, sizeof(const float *), &bytes) || !reserve(&cursor, bytes, &at_inputs))
        return 0;
    if (!em_mul_size(model->node_count, sizeof(float *), &bytes) || !reserve(&cursor, bytes, &at_outputs)) return 0;
    if (!reserve(&cursor, bytes, &at_scratch)) return 0;
    if (!em_mul_size(model->node_count, sizeof(uint64_t), &bytes) || !reserve(&cursor, bytes, &at_runs)) return 0;
    if (!em_mul_size(model->node_count, sizeof(em_profile_counters), &bytes) || !reserve(&cursor, bytes, &at_profile))
        return 0;
    if (!reserve(&cursor, model->table_group_count, &at_ready)) return 0;
    if (!reserve(&cursor, model->arena_bytes, &at_arena)) return 0;
    if (base != NULL) {
        ctx = (em_context *)(void *)(base + at_ctx);
        ctx->model = model;
        ctx->inputs = (const float **)(void *)(base + at_inputs);
        ctx->node_outputs = (float **)(void *)(base + at_outputs);
        ctx->node_scratch = (float **)(void *)(base + at_scratch);
        ctx->node_runs = (uint64_t *)(void *)(base + at_runs);
        ctx->profile = (em_profile_counters *)(void *)(base + at_profile);
        ctx->table_ready = base + at_ready;
        ctx->arena = base + at_arena;
        ctx->profiling = 0;
        ctx->pool = NULL;
        for (i = 0; i < model->input_count; ++i) ctx->inputs[i] = NULL;
        for (i = 0; i < model->node_count; ++i) {
            const em_node *node = &model->nodes[i];
            ctx->node_outputs[i] = (float *)(void *)(ctx->arena + node->output_offset);
            ctx->node_scratch[i] = (float *)(void *)(ctx->arena + node->scratch_offset);
            ctx->node_runs[i] = 0;
            memset(&ctx->profile[i], 0, sizeof ctx->profile[i]);
        }
        for (i = 0; i < model->table_group_count; ++i) ctx->table_ready[i] = 0;
    }
    if (!em_add_size(cursor, EM_CONTEXT_ALIGNMENT - 1u, total)) return 0;
    if (out_ctx != NULL) *out_ctx = ctx;
    return 1;
}

size_t em_context_size(const em_model *model)
{
    return model != NULL ? model->context_bytes : 0;
}

em_status em_context_init(const em_model *model, void *memory, size_t size, em_context **out_ctx, em_error *err)
{
    size_t total, skip;
    unsigned char *base;
    if (out_ctx != NULL) *out_ctx = NULL;
    if (model == NULL || memory == NULL || out_ctx == NULL)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_context_init: model, memory and out_ctx must not be NULL");
    if (size < model->context_bytes)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_context_init: %zu bytes of memory, the model needs %zu "
                       "(em_context_size)", size, model->context_bytes);
    skip = (EM_CONTEXT_ALIGNMENT - (size_t)((uintptr_t)memory % EM_CONTEXT_ALIGNMENT)) % EM_CONTEXT_ALIGNMENT;
    base = (unsigned char *)memory + skip; /* context_bytes includes this slack */
    if (!em_context_layout(model, base, &total, out_ctx))
        return em_fail(err, EM_STATUS_LIMIT, "em_context_init: context size overflows"); /* defensive: load checked */
    em_error_clear(err);
    return EM_STATUS_OK;
}

em_status em_context_set_pool(em_context *ctx, em_pool *pool)
{
    if (ctx == NULL) return EM_STATUS_BAD_ARGUMENT;
    ctx->pool = pool;
    return EM_STATUS_OK;
}

uint32_t em_model_task_lanes(const em_model *model)
{
    return model != NULL ? model->lane_count : 0;
}

uint64_t em_context_node_runs(const em_context *ctx, uint32_t node)
{
    if (ctx == NULL || node >= ctx->model->node_count) return 0;
    return ctx->node_runs[node];
}

em_status em_context_enable_profiling(em_context *ctx, int enable)
{
    uint32_t i;
    if (ctx == NULL) return EM_STATUS_BAD_ARGUMENT;
    if (enable && !ctx->profiling)
        for (i = 0; i < ctx->model->node_count; ++i) memset(&ctx->profile[i], 0, sizeof ctx->profile[i]);
    ctx->profiling = enable != 0;
    return EM_STATUS_OK;
}

em_status em_context_node_profile(const em_context *ctx, uint32_t node, em_node_profile *out)
{
    const em_profile_counters *p;
    if (ctx == NULL || out == NULL || node >= ctx->model->node_count) return EM_STATUS_BAD_ARGUMENT;
    p = &ctx->profile[node];
    out->runs = p->runs;
    out->total_ns = p->total_ns;
    out->table_ns = p->table_ns;
    out->accumulate_ns = p->accumulate_ns;
    return EM_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Runs
 * --------------------------------------------------------------------------------------------- */

static const float *value_data(const em_context *ctx, uint32_t value)
{
    const em_model *m = ctx->model;
    return value < m->input_count ? ctx->inputs[value] : ctx->node_outputs[value - m->input_count];
}

/* One step of a split node on the pool: pieces [units · c / chunks, units · (c + 1) / chunks) per chunk c. */
typedef struct split_job {
    const em_node *node;
    const float *input;
    float *output;
    const em_kernel_env *env;
    uint32_t step, units, chunks;
} split_job;

static void run_split_chunk(void *arg, uint32_t chunk)
{
    const split_job *job = (const split_job *)arg;
    const uint32_t begin = (uint32_t)((uint64_t)job->units * chunk / job->chunks);
    const uint32_t end = (uint32_t)((uint64_t)job->units * (chunk + 1u) / job->chunks);
    if (begin < end) job->node->kernel->run_part(job->node, job->input, job->output, job->env, job->step, begin, end);
}

/* Chunks per worker of a split step: more than one, so a worker that starts late (or a slower piece) leaves
 * less of the step to wait for; few, since every claim is an atomic operation on a shared line. */
#ifndef EM_SPLIT_CHUNKS_PER_THREAD
#define EM_SPLIT_CHUNKS_PER_THREAD 2u
#endif

/* A run of a split node: its kernel's steps in order, each over the pool (em_kernels.h split / run_part).
 * The pieces get no profile (they would add to one counter from several threads); the step's time goes to
 * table_ns or accumulate_ns here. */
static void run_split(em_context *ctx, const em_node *node, const float *input, float *output, em_kernel_env *env)
{
    const uint32_t threads = em_pool_threads(ctx->pool);
    em_profile_counters *profile = env->profile;
    split_job job;
    uint32_t kind;
    env->profile = NULL;
    job.node = node;
    job.input = input;
    job.output = output;
    job.env = env;
    for (job.step = 0; (kind = node->kernel->split(node, env, job.step, &job.units)) != 0; ++job.step) {
        const uint64_t start = profile != NULL ? em_platform_now_ns() : 0;
        if (job.units == 0) continue;
        job.chunks = job.units < threads * EM_SPLIT_CHUNKS_PER_THREAD ? job.units : threads * EM_SPLIT_CHUNKS_PER_THREAD;
        em_pool_run_chunks(ctx->pool, run_split_chunk, &job, job.chunks);
        if (profile != NULL) {
            const uint64_t ns = em_platform_now_ns() - start;
            if (kind == EM_STEP_TABLE) profile->table_ns += ns;
            else profile->accumulate_ns += ns;
        }
    }
    env->profile = profile;
}

/* Runs node n. `split`: whether a split node may use the context's pool (not inside a task lane, which
 * already has a worker of its own). */
static void run_node_on(em_context *ctx, uint32_t n, int split)
{
    const em_node *node = &ctx->model->nodes[n];
    const em_kernel *k = node->kernel;
    const float *input = value_data(ctx, node->input);
    em_profile_counters *profile = ctx->profiling ? &ctx->profile[n] : NULL;
    const uint64_t start = profile != NULL ? em_platform_now_ns() : 0;
    if (k->run != NULL) {
        em_kernel_env env;
        env.scratch = ctx->node_scratch[n];
        env.shared_table = NULL;
        env.table_ready = NULL;
        env.profile = profile;
        env.residual = node->residual != EM_NONE ? value_data(ctx, node->residual) : NULL;
        if (node->table_group != EM_NONE) {
            env.shared_table = (float *)(void *)(ctx->arena + ctx->model->table_groups[node->table_group].offset);
            env.table_ready = &ctx->table_ready[node->table_group];
        }
        if (split && node->split && ctx->pool != NULL && em_pool_threads(ctx->pool) > 1)
            run_split(ctx, node, input, ctx->node_outputs[n], &env);
        else
            k->run(node, input, ctx->node_outputs[n], &env);
    } else if (k->eval_n != NULL) {
        const float *inputs[EM_MAX_NODE_INPUTS];
        uint32_t i;
        for (i = 0; i < node->input_count; ++i) inputs[i] = value_data(ctx, node->inputs[i]);
        k->eval_n(node, inputs, ctx->node_outputs[n], ctx->node_scratch[n]);
    } else {
        k->eval(node, input, ctx->node_outputs[n], ctx->node_scratch[n]);
    }
    if (profile != NULL) {
        profile->total_ns += em_platform_now_ns() - start;
        ++profile->runs;
    }
    ++ctx->node_runs[n];
}

static void run_node(em_context *ctx, uint32_t n)
{
    run_node_on(ctx, n, 1);
}

/* One step of em_run_all for run group g: a fused group is one product over the members' pixels, whose
 * inputs and outputs the plan laid out back to back; otherwise the members run one after the other.
 * Profiling: the step's time goes to its first member (the group's lead), every member counts a run. */
static void run_group(em_context *ctx, const em_run_group *group)
{
    const em_model *m = ctx->model;
    const uint32_t lead = m->schedule[group->first];
    uint32_t i;
    if (group->fused) {
        const em_node *node = &m->nodes[lead];
        em_profile_counters *profile = ctx->profiling ? &ctx->profile[lead] : NULL;
        const uint64_t start = profile != NULL ? em_platform_now_ns() : 0;
        size_t pixels = 0;
        for (i = 0; i < group->count; ++i) pixels += (size_t)m->nodes[m->schedule[group->first + i]].out.h *
                                                     m->nodes[m->schedule[group->first + i]].out.w;
        node->kernel->fused_run(node, value_data(ctx, node->input), ctx->node_outputs[lead], pixels);
        for (i = 0; i < group->count; ++i) {
            const uint32_t n = m->schedule[group->first + i];
            ++ctx->node_runs[n];
            if (profile != NULL) ++ctx->profile[n].runs;
        }
        if (profile != NULL) profile->total_ns += em_platform_now_ns() - start;
        return;
    }
    for (i = 0; i < group->count; ++i) {
        const uint32_t n = m->schedule[group->first + i];
        run_node(ctx, n);
        if (ctx->profiling && i > 0) { /* the member's time of this run moves to the lead */
            ctx->profile[lead].total_ns += ctx->profile[n].total_ns;
            ctx->profile[n].total_ns = 0;
        }
    }
}

/* Shared tables are valid for one run only: the inputs change between runs. */
static void begin_run(em_context *ctx)
{
    uint32_t g;
    for (g = 0; g < ctx->model->table_group_count; ++g) ctx->table_ready[g] = 0;
}

em_status em_run_task(em_context *ctx, uint32_t task, const float *input, size_t input_count, float *output,
                      size_t output_count, em_error *err)
{
    const em_model *m;
    const em_task *t;
    const em_shape *in;
    uint32_t k;

    if (ctx == NULL) return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_task: ctx is NULL");
    m = ctx->model;
    if (task >= m->task_count)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_task: task index %" PRIu32 " out of range (model has %"
                       PRIu32 " tasks)", task, m->task_count);
    t = &m->tasks[task];
    in = &m->value_shapes[t->input];
    if (input == NULL || output == NULL)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_task: task %" PRIu32 " ('%s'): input and output must not "
                       "be NULL", task, t->name);
    if (input_count != in->numel)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_task: task %" PRIu32 " ('%s') expects %" PRIu32
                       " input floats (%" PRIu32 "x%" PRIu32 "x%" PRIu32 "), got %zu", task, t->name, in->numel,
                       in->h, in->w, in->c, input_count);
    if (output_count != t->classes)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_task: task %" PRIu32 " ('%s') produces %" PRIu32
                       " logits, output holds %zu", task, t->name, t->classes, output_count);

    ctx->inputs[t->input] = input;
    begin_run(ctx);
    for (k = 0; k < t->plan_node_count; ++k) run_node(ctx, m->plan_nodes[t->first_plan_node + k]);
    /* memmove: a task whose output is its input value may be called in place */
    memmove(output, value_data(ctx, t->output), (size_t)t->classes * sizeof(float));
    ctx->inputs[t->input] = NULL; /* the caller's array is only borrowed for the run */
    em_error_clear(err);
    return EM_STATUS_OK;
}

/* The lanes of em_run_all on a pool: worker w runs lanes w, w + threads, ... each lane's nodes in schedule
 * order on one thread. Lanes write disjoint bytes (em_plan.c gives no two lanes shared bytes), their own
 * nodes' counters and the ready flags of their own tables only; they read prefix values and tables that
 * were complete before the job started. */
typedef struct lane_job {
    em_context *ctx;
    uint32_t threads;
} lane_job;

static void run_lanes(void *arg, uint32_t worker)
{
    const lane_job *job = (const lane_job *)arg;
    em_context *ctx = job->ctx;
    const em_model *m = ctx->model;
    uint32_t lane, i;
    for (lane = worker; lane < m->lane_count; lane += job->threads)
        for (i = m->prefix_steps; i < m->node_count; ++i)
            if (m->nodes[m->schedule[i]].lane == lane) run_node_on(ctx, m->schedule[i], 0);
}

/* Handoffs cost, in the cost model's units, per split step, and the steps per split node (most kernels have
 * two). Measured on the 2-core x86-64 host (em_run --task all, README pair at light, quiet): a split step costs
 * about 2 µs of hand-off there, not the 0.5 µs first assumed; at 16384 the model split the
 * pair's small nodes and 2 threads ran at 0.7x of 1 thread, with this value it runs the task lanes: 1.5x. */
#ifndef EM_SPLIT_HANDOFF_COST
#define EM_SPLIT_HANDOFF_COST 131072u
#endif
#define EM_SPLIT_STEPS_PER_NODE 2u

/* Whether em_run_all on `threads` workers runs the task lanes in parallel rather than the schedule node by
 * node with the large nodes split: the estimate of the longest worker's work, prefix then lanes (each lane
 * on one worker, lanes w, w + threads, ... on worker w, as run_lanes deals them out), against that of
 * splitting every split node over all workers. Lanes win when the tasks are balanced and many nodes are
 * small; splitting when one task dominates (the example pair: its fashion task is 60% of the work). The cost
 * model is rough per layer (on the example pair it puts the two tasks within 10% of each other, measured
 * 60:40), and a lane's imbalance costs the whole difference while a split step's only a piece, so the lanes
 * must be estimated EM_LANES_MARGIN_X10 / 10 times faster to be chosen. */
#ifndef EM_LANES_MARGIN_X10
#define EM_LANES_MARGIN_X10 12u
#endif
static int lanes_help(const em_model *m, uint32_t threads)
{
    uint64_t lanes = m->prefix_cost_serial + m->prefix_cost_split / threads +
                     (uint64_t)m->prefix_split_nodes * EM_SPLIT_STEPS_PER_NODE * EM_SPLIT_HANDOFF_COST;
    uint64_t worst = 0, split;
    uint32_t w, t;
    if (m->lane_count < 2) return 0;
    for (w = 0; w < threads && w < m->lane_count; ++w) {
        uint64_t load = 0;
        for (t = w; t < m->lane_count; t += threads) load += m->lane_cost[t];
        if (load > worst) worst = load;
    }
    lanes += worst;
    split = m->cost_serial + m->cost_split / threads + (uint64_t)m->split_nodes * EM_SPLIT_STEPS_PER_NODE *
                                                           EM_SPLIT_HANDOFF_COST;
    return lanes * EM_LANES_MARGIN_X10 < split * 10u;
}

em_status em_run_all(em_context *ctx, const float *const *inputs, float *const *outputs, em_error *err)
{
    const em_model *m;
    uint32_t i;

    if (ctx == NULL || inputs == NULL || outputs == NULL)
        return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_all: ctx, inputs and outputs must not be NULL");
    m = ctx->model;
    for (i = 0; i < m->input_count; ++i)
        if (inputs[i] == NULL)
            return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_all: inputs[%" PRIu32 "] is NULL (the model has %"
                           PRIu32 " inputs)", i, m->input_count);
    for (i = 0; i < m->task_count; ++i)
        if (outputs[i] == NULL)
            return em_fail(err, EM_STATUS_BAD_ARGUMENT, "em_run_all: outputs[%" PRIu32 "] (task '%s') is NULL", i,
                           m->tasks[i].name);

    for (i = 0; i < m->input_count; ++i) ctx->inputs[i] = inputs[i];
    begin_run(ctx);
    i = 0;
    /* the schedule is a topological order, so a trunk shared by several tasks runs once; nodes that share
     * weights across tasks run as one step (em_plan.c). A lane plan with a pool, where the lanes help
     * (lanes_help): the prefix (nodes several tasks need) here, then the lanes on the pool's workers; else
     * node by node, each split node over the pool's workers (run_node). */
    if (ctx->pool != NULL && m->lane_count > 1 && em_pool_threads(ctx->pool) > 1 &&
        lanes_help(m, em_pool_threads(ctx->pool))) {
        lane_job job;
        for (i = 0; i < m->prefix_steps; ++i) run_node(ctx, m->schedule[i]);
        job.ctx = ctx;
        job.threads = em_pool_threads(ctx->pool);
        em_pool_run(ctx->pool, run_lanes, &job);
        i = m->node_count;
    }
    for (; i < m->node_count;) {
        const uint32_t n = m->schedule[i];
        if (m->nodes[n].run_group == EM_NONE) {
            run_node(ctx, n);
            ++i;
        } else {
            const em_run_group *group = &m->run_groups[m->nodes[n].run_group];
            run_group(ctx, group);
            i += group->count;
        }
    }
    for (i = 0; i < m->task_count; ++i)
        memmove(outputs[i], value_data(ctx, m->tasks[i].output), (size_t)m->tasks[i].classes * sizeof(float));
    for (i = 0; i < m->input_count; ++i) ctx->inputs[i] = NULL;
    em_error_clear(err);
    return EM_STATUS_OK;
}
