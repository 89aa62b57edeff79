/* The run schedule and the context plan, decided once at load.
 *
 * Schedule: em_run_all's order of the nodes. Nodes of different tasks that apply the same weights to
 * different values (same op, weight / index / bias tensors, window, activation and kernel: after
 * zippering, the point-wise convs both tasks share) form a run group, run as one step; the schedule is
 * a topological order (list scheduling: a node when its input is ready, a group when all its members'
 * inputs are) with each group's members adjacent. A group that would make the order impossible (two
 * groups crossing between the same two chains) is dissolved. em_run_task runs its task's nodes in
 * schedule order, a subsequence.
 *
 * Fused groups: for 1×1 convolutions on the fast kernels the plan places the members' inputs back to
 * back in the arena (one buffer, member i at the sum of the earlier ones' sizes) and their outputs too,
 * so the step is one matrix product of [Σ pixels × Cin] · [Cin × Cout]: the weights are read once for all
 * the members' feature maps. Row i of a product depends only on row i of A, so every member's output has
 * the bits it has when the member runs alone (em_run_task). A value can be in one such block only; a
 * group whose values are already in a different block (or are graph inputs, or not a multiple of the
 * alignment in size) stays unfused: its members run one after the other within the step.
 *
 * Buffers: each node's output value (or block), each node's scratch, and each table group's shared table.
 * Lifetimes are intervals of schedule steps (the members of a run group share one step):
 *   output of node i     [step of i, last step reading it]; a task output lives to the end of the run,
 *                        because em_run_* copy the logits out after the last node;
 *   scratch of node i    [step of i, step of i];
 *   table of a group     [its first node's step, its last node's step].
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

#include "em_kernels.h"

typedef struct plan_buffer {
    size_t bytes;
    uint32_t first, last; /* lifetime, schedule steps */
    size_t offset;
    uint32_t kind; /* 0 output, 1 scratch, 2 table group, 3 output block */
    uint32_t id;   /* node, group or block */
    uint32_t lane; /* EM_LOAD_PARALLEL_TASKS: the lane that alone uses it, or EM_NONE */
} plan_buffer;

/* ---- run groups and the schedule ---------------------------------------------------------------- */

static int same_weights(const em_node *a, const em_node *b)
{
    return a->op == b->op && a->kernel == b->kernel && a->weight_id != EM_NONE && a->weight_id == b->weight_id &&
           a->index_id == b->index_id && a->bias_id == b->bias_id && a->activation == b->activation &&
           a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w && a->stride_h == b->stride_h &&
           a->stride_w == b->stride_w && a->pad_top == b->pad_top && a->pad_left == b->pad_left &&
           a->pad_bottom == b->pad_bottom && a->pad_right == b->pad_right && a->seg_len == b->seg_len &&
           a->codewords == b->codewords && a->in.c == b->in.c && a->out.c == b->out.c;
}

/* With input 0 as a node's parent the nodes form a forest (in v1, where every node reads one value, that
 * is the whole graph). Multi-input nodes (v2) have more ancestors than the forest shows, so related() may
 * miss a dependency through inputs 1..: a group holding such a pair can never have all its inputs ready,
 * and build_schedule() dissolves it, so the schedule stays a topological order either way.
 * Preorder numbers and subtree sizes make "a is computed from b's value" one comparison:
 * pre[b] < pre[a] < pre[b] + size[b]. Nodes come after the value they read, so one pass backwards sums the
 * sizes and one pass forwards numbers them; O(node_count), which keeps hostile graphs (MAX_NODES nodes all
 * with one weight tensor) cheap to plan. */
typedef struct plan_tree {
    uint32_t *size, *pre, *cursor;
} plan_tree;

static uint32_t parent_of(const em_model *m, uint32_t n)
{
    const uint32_t v = m->nodes[n].input;
    return v >= m->input_count ? v - m->input_count : EM_NONE;
}

static void number_tree(const em_model *m, const plan_tree *t)
{
    uint32_t n, next_root = 0;
    for (n = 0; n < m->node_count; ++n) t->size[n] = 1;
    for (n = m->node_count; n-- > 0;) {
        const uint32_t p = parent_of(m, n);
        if (p != EM_NONE) t->size[p] += t->size[n];
    }
    for (n = 0; n < m->node_count; ++n) {
        const uint32_t p = parent_of(m, n);
        if (p == EM_NONE) {
            t->pre[n] = next_root;
            next_root += t->size[n];
        } else {
            t->pre[n] = t->cursor[p];
            t->cursor[p] += t->size[n];
        }
        t->cursor[n] = t->pre[n] + 1;
    }
}

static int related(const plan_tree *t, uint32_t a, uint32_t b)
{
    return (t->pre[b] < t->pre[a] && t->pre[a] < t->pre[b] + t->size[b]) ||
           (t->pre[a] < t->pre[b] && t->pre[b] < t->pre[a] + t->size[a]);
}

/* Candidate groups: node_group[n] = the lowest member of n's group, or EM_NONE. Members read different
 * values and none is computed from another (then all their inputs can be ready at once). */
static void find_run_groups(const em_model *m, const plan_tree *t, uint32_t *node_group, uint32_t *members)
{
    uint32_t i, j, k;
    for (i = 0; i < m->node_count; ++i) node_group[i] = EM_NONE;
    for (i = 0; i < m->node_count; ++i) {
        uint32_t size = 1;
        if (node_group[i] != EM_NONE || m->nodes[i].weight_id == EM_NONE) continue;
        members[0] = i;
        for (j = i + 1; j < m->node_count && size < EM_MAX_TASKS; ++j) {
            int ok = node_group[j] == EM_NONE && same_weights(&m->nodes[i], &m->nodes[j]);
            for (k = 0; ok && k < size; ++k)
                ok = m->nodes[members[k]].input != m->nodes[j].input && !related(t, j, members[k]);
            if (!ok) continue;
            node_group[i] = node_group[j] = i;
            members[size++] = j;
        }
    }
}

static int input_ready(const em_model *m, const unsigned char *done, uint32_t n)
{
    const em_node *node = &m->nodes[n];
    uint32_t k;
    for (k = 0; k < node->input_count; ++k) {
        const uint32_t v = node->inputs[k];
        if (v >= m->input_count && !done[v - m->input_count]) return 0;
    }
    return 1;
}

/* List scheduling into m->schedule; sets node->step. Dissolves groups that block the order. next[n]: the
 * next member of n's group (EM_NONE after the last), groups starting at their lowest member. Every pass
 * places all it can in node order, so the passes are at most one per group plus one. */
static void build_schedule(em_model *m, uint32_t *node_group, const uint32_t *next, unsigned char *done)
{
    uint32_t placed = 0, step = 0, n, k;
    for (n = 0; n < m->node_count; ++n) done[n] = 0;
    while (placed < m->node_count) {
        int progress = 0;
        uint32_t blocked = EM_NONE;
        for (n = 0; n < m->node_count; ++n) {
            const uint32_t g = node_group[n];
            int ready = !done[n] && input_ready(m, done, n);
            if (!ready) continue;
            if (g != EM_NONE) {
                for (k = g; ready && k != EM_NONE; k = next[k]) ready = !done[k] && input_ready(m, done, k);
                if (!ready) {
                    if (blocked == EM_NONE) blocked = g;
                    continue;
                }
                for (k = g; k != EM_NONE; k = next[k]) {
                    m->schedule[placed++] = k;
                    m->nodes[k].step = step;
                    done[k] = 1;
                }
            } else {
                m->schedule[placed++] = n;
                m->nodes[n].step = step;
                done[n] = 1;
            }
            ++step;
            progress = 1;
        }
        if (!progress) /* only groups waiting on each other are left: the first of them runs node by node */
            for (k = blocked; k != EM_NONE; k = next[k]) node_group[k] = EM_NONE;
    }
}

/* Output blocks of fused groups: block_of[n] = the block holding node n's output, or EM_NONE; a block is
 * the list of nodes block_nodes[block_first[b] .. + block_count[b]). Returns the number of blocks. */
typedef struct plan_blocks {
    uint32_t *block_of, *block_first, *block_count, *block_nodes;
    uint32_t blocks, nodes_used;
} plan_blocks;

static size_t output_bytes(const em_node *node)
{
    /* numel <= MAX_VALUE_ELEMENTS, so 4·numel + 63 fits in size_t */
    return ((size_t)node->out.numel * sizeof(float) + EM_CONTEXT_ALIGNMENT - 1u) & ~(size_t)(EM_CONTEXT_ALIGNMENT - 1u);
}

/* Whether the values of nodes[0..count) can be one block: all in no block, or exactly one existing
 * block in this order; and back to back without gaps (every size but the last a multiple of 64). */
static int block_fits(const em_model *m, const plan_blocks *pb, const uint32_t *nodes, uint32_t count, int *exists)
{
    uint32_t i, b = pb->block_of[nodes[0]];
    for (i = 0; i + 1 < count; ++i)
        if ((size_t)m->nodes[nodes[i]].out.numel * sizeof(float) != output_bytes(&m->nodes[nodes[i]])) return 0;
    *exists = b != EM_NONE;
    if (b == EM_NONE) {
        for (i = 0; i < count; ++i)
            if (pb->block_of[nodes[i]] != EM_NONE) return 0;
        return 1;
    }
    if (pb->block_count[b] != count) return 0;
    for (i = 0; i < count; ++i)
        if (pb->block_nodes[pb->block_first[b] + i] != nodes[i]) return 0;
    return 1;
}

static void add_block(plan_blocks *pb, const uint32_t *nodes, uint32_t count)
{
    uint32_t i;
    pb->block_first[pb->blocks] = pb->nodes_used;
    pb->block_count[pb->blocks] = count;
    for (i = 0; i < count; ++i) {
        pb->block_nodes[pb->nodes_used++] = nodes[i];
        pb->block_of[nodes[i]] = pb->blocks;
    }
    ++pb->blocks;
}

/* Decides which groups are fused and lays out their blocks (inputs: the nodes producing the members'
 * inputs; outputs: the members), with `scratch` room for 2·MAX_TASKS node ids. */
static void fuse_groups(em_model *m, plan_blocks *pb, uint32_t *scratch)
{
    uint32_t g, i;
    for (g = 0; g < m->run_group_count; ++g) {
        em_run_group *group = &m->run_groups[g];
        uint32_t *ins = scratch, *outs = scratch + EM_MAX_TASKS;
        int ok = 1, in_exists = 0, out_exists = 0;
        group->fused = 0;
        for (i = 0; i < group->count && ok; ++i) {
            const em_node *node = &m->nodes[m->schedule[group->first + i]];
            ok = em_kernel_fusable(node) && node->input >= m->input_count;
            if (!ok) break;
            ins[i] = node->input - m->input_count;
            outs[i] = m->schedule[group->first + i];
        }
        if (!ok || !block_fits(m, pb, ins, group->count, &in_exists) ||
            !block_fits(m, pb, outs, group->count, &out_exists))
            continue;
        for (i = 0; i < group->count; ++i) /* a value both read and written by the step cannot be */
            if (pb->block_of[ins[i]] != EM_NONE && pb->block_of[ins[i]] == pb->block_of[outs[0]]) ok = 0;
        if (!ok) continue;
        if (!in_exists) add_block(pb, ins, group->count);
        if (!out_exists) add_block(pb, outs, group->count);
        group->fused = 1;
    }
}

/* The schedule, the run groups and em_run_task's plans in schedule order. `work`: 4 · node_count words
 * (tree numbers, then member lists) and MAX_TASKS more. */
/* EM_LOAD_PARALLEL_TASKS: a node only one task needs belongs to that task's lane; a node several tasks need
 * (a shared trunk) to none. The nodes several tasks need are closed under "reads": everything such a node
 * reads is needed by the same tasks. So running them first (the prefix) and then every lane on its own
 * thread respects every dependency; the schedule becomes the prefix, then the lane nodes, each part in its
 * former order (a stable partition of a topological order is one). A node no task needs could read lane
 * values and run after them: such a model keeps the serial plan (lane_count 0). `work`: 2 × node_count words. */
static void plan_lanes(em_model *m, uint32_t *work)
{
    uint32_t *need = work, *order = work + m->node_count;
    uint32_t t, n, k, at = 0;
    if (m->task_count < 2) return;
    for (n = 0; n < m->node_count; ++n) need[n] = 0;
    for (t = 0; t < m->task_count; ++t)
        for (k = 0; k < m->tasks[t].plan_node_count; ++k) {
            const uint32_t node = m->plan_nodes[m->tasks[t].first_plan_node + k];
            ++need[node];
            m->nodes[node].lane = t;
        }
    for (n = 0; n < m->node_count; ++n) {
        if (need[n] == 0) {
            for (k = 0; k < m->node_count; ++k) m->nodes[k].lane = EM_NONE;
            return;
        }
        if (need[n] > 1) m->nodes[n].lane = EM_NONE;
    }
    for (n = 0; n < m->node_count; ++n)
        if (m->nodes[m->schedule[n]].lane == EM_NONE) order[at++] = m->schedule[n];
    m->prefix_steps = at;
    for (n = 0; n < m->node_count; ++n)
        if (m->nodes[m->schedule[n]].lane != EM_NONE) order[at++] = m->schedule[n];
    for (n = 0; n < m->node_count; ++n) { /* no run groups: one node per step */
        m->schedule[n] = order[n];
        m->nodes[order[n]].step = n;
    }
    m->lane_count = m->task_count;
}

static em_status plan_schedule(em_model *m, uint32_t *node_group, unsigned char *done, uint32_t *work, em_error *err)
{
    const uint32_t count_nodes = m->node_count;
    plan_tree tree;
    uint32_t *next = work + 2u * count_nodes, *last = work + 3u * count_nodes;
    uint32_t n, t, count = 0;
    tree.size = work;
    tree.pre = work + count_nodes;
    tree.cursor = work + 2u * count_nodes;
    number_tree(m, &tree);
    find_run_groups(m, &tree, node_group, work + 4u * count_nodes);
    if (m->load_flags & (EM_LOAD_NO_RUN_GROUPS | EM_LOAD_PARALLEL_TASKS)) /* a group's members are in several lanes */
        for (n = 0; n < count_nodes; ++n) node_group[n] = EM_NONE;
    for (n = 0; n < count_nodes; ++n) { /* member lists (tree.cursor's words are free again) */
        const uint32_t g = node_group[n];
        next[n] = EM_NONE;
        if (g == EM_NONE) continue;
        if (g != n) next[last[g]] = n;
        last[g] = n;
    }
    build_schedule(m, node_group, next, done);
    for (n = 0; n < m->node_count; ++n) m->nodes[n].lane = EM_NONE;
    if (m->load_flags & EM_LOAD_PARALLEL_TASKS) plan_lanes(m, work); /* next[] and last[] are free again */
    for (n = 0; n < m->node_count; ++n) {
        m->nodes[n].run_group = EM_NONE;
        if (node_group[n] == n) ++count;
    }
    if (count > 0) {
        m->run_groups = (em_run_group *)m->allocator.alloc(m->allocator.user, count * sizeof(em_run_group));
        if (m->run_groups == NULL)
            return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for run groups",
                           (size_t)count * sizeof(em_run_group));
        for (n = 0; n < m->node_count; ++n) { /* groups in schedule order; members are adjacent there */
            const uint32_t node = m->schedule[n];
            if (node_group[node] == EM_NONE) continue;
            if (m->run_group_count == 0 || m->nodes[m->schedule[n - 1]].run_group != m->run_group_count - 1 ||
                node_group[m->schedule[n - 1]] != node_group[node]) {
                m->run_groups[m->run_group_count].first = n;
                m->run_groups[m->run_group_count].count = 0;
                m->run_groups[m->run_group_count].fused = 0;
                ++m->run_group_count;
            }
            m->nodes[node].run_group = m->run_group_count - 1;
            ++m->run_groups[m->run_group_count - 1].count;
        }
    }
    for (t = 0; t < m->task_count; ++t) { /* insertion sort by step: plans are short */
        uint32_t *plan = m->plan_nodes + m->tasks[t].first_plan_node, i, j;
        for (i = 1; i < m->tasks[t].plan_node_count; ++i) {
            const uint32_t v = plan[i];
            for (j = i; j > 0 && m->nodes[plan[j - 1]].step > m->nodes[v].step; --j) plan[j] = plan[j - 1];
            plan[j] = v;
        }
    }
    return EM_STATUS_OK;
}

/* Residual ADDs fused into the conv that feeds them (issue 15: "residual Add fused into the epilogue of the conv
 * that feeds it"): an ADD of two values, one of them the output of a conv whose kernel can add a residual in
 * its epilogue, whose activation is NONE, which runs alone (no run group), and whose output nothing else
 * reads (no other consumer, no task output); the other value must be computed before the conv's step. The
 * conv then writes act(conv + bias + residual) straight into the ADD's buffer (the ADD's output is the conv's
 * buffer, living to the ADD's last use) and the ADD runs nothing: one pass over memory and one buffer less.
 * Same float32 operations as conv-then-ADD, so the result has the same bits. `consumers`: node_count words. */
static void fuse_residual_adds(em_model *m, uint32_t *consumers)
{
    uint32_t n, k, t;
    for (n = 0; n < m->node_count; ++n) {
        m->nodes[n].residual = EM_NONE;
        m->nodes[n].residual_activation = EM_ACT_NONE;
        m->nodes[n].fused_into = EM_NONE;
        consumers[n] = 0;
    }
    if (m->load_flags & EM_LOAD_NO_FUSED_ADD) return;
    for (n = 0; n < m->node_count; ++n)
        for (k = 0; k < m->nodes[n].input_count; ++k)
            if (m->nodes[n].inputs[k] >= m->input_count) ++consumers[m->nodes[n].inputs[k] - m->input_count];
    for (t = 0; t < m->task_count; ++t)
        if (m->tasks[t].output >= m->input_count) consumers[m->tasks[t].output - m->input_count] += 2;
    for (n = 0; n < m->node_count; ++n) {
        em_node *add = &m->nodes[n];
        if (add->op != EM_OP_ADD || add->input_count != 2) continue;
        for (k = 0; k < 2; ++k) {
            const uint32_t v = add->inputs[k], r = add->inputs[1 - k];
            em_node *conv;
            if (v < m->input_count) continue;
            conv = &m->nodes[v - m->input_count];
            if (!conv->kernel->residual_add || conv->activation != EM_ACT_NONE || conv->run_group != EM_NONE ||
                consumers[v - m->input_count] != 1 || conv->residual != EM_NONE)
                continue;
            if (r >= m->input_count && m->nodes[r - m->input_count].step >= conv->step) continue; /* not ready */
            conv->residual = r;
            conv->residual_activation = add->activation;
            add->fused_into = v - m->input_count;
            add->kernel = &em_add_fused_kernel;
            break;
        }
    }
}

/* Threads: each node's cost and whether a run with a pool splits it (em_kernels.h split), and the sums
 * em_run_all compares to choose between the task lanes and split nodes. (A fused run group's step is one
 * product, never split; its members run alone, and may be split, in em_run_task.) */
static void plan_split(em_model *m)
{
    uint32_t n, t;
    m->prefix_cost_split = m->prefix_cost_serial = m->cost_split = m->cost_serial = 0;
    m->prefix_split_nodes = m->split_nodes = 0;
    for (t = 0; t < EM_MAX_TASKS; ++t) m->lane_cost[t] = 0;
    for (n = 0; n < m->node_count; ++n) {
        em_node *node = &m->nodes[n];
        node->cost = em_node_cost(node);
        node->split = node->kernel->split != NULL && node->kernel->run_part != NULL && node->cost >= EM_SPLIT_MIN_COST;
        if (node->split) {
            m->cost_split += node->cost;
            ++m->split_nodes;
        } else {
            m->cost_serial += node->cost;
        }
        if (m->lane_count > 0 && node->lane != EM_NONE) {
            m->lane_cost[node->lane] += node->cost;
        } else if (node->split) {
            m->prefix_cost_split += node->cost;
            ++m->prefix_split_nodes;
        } else {
            m->prefix_cost_serial += node->cost;
        }
    }
}

static int tables_compatible(const em_node *a, const em_node *b)
{
    return a->kernel == b->kernel && a->op == b->op && a->input == b->input && a->weight_id == b->weight_id &&
           a->seg_len == b->seg_len && a->codewords == b->codewords && a->segments == b->segments &&
           a->stride_h == b->stride_h && a->stride_w == b->stride_w && a->pad_top == b->pad_top &&
           a->pad_left == b->pad_left && a->pad_bottom == b->pad_bottom && a->pad_right == b->pad_right &&
           a->table_bytes == b->table_bytes &&
           /* two lanes never share a table: only a node run before the lanes may build one they read */
           (a->lane == b->lane || a->lane == EM_NONE || b->lane == EM_NONE);
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
    const uint32_t end = m->node_count; /* "to the end of the run": past every step */
    plan_buffer *buffers, **overlapping;
    plan_blocks pb;
    uint32_t *temp;
    size_t count = 0, i, j, bytes, arena = 0;
    uint32_t groups, n, t, b;
    em_status st;

    /* the schedule (model-owned) and the temporaries: node_group, done, 4 block arrays, fuse scratch */
    m->schedule = (uint32_t *)m->allocator.alloc(m->allocator.user, (size_t)m->node_count * sizeof(uint32_t) + 1u);
    if (m->schedule == NULL)
        return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating the run schedule");
    bytes = ((size_t)6 * m->node_count + 2u * EM_MAX_TASKS) * sizeof(uint32_t); /* node_count <= MAX_NODES */
    temp = (uint32_t *)m->allocator.alloc(m->allocator.user, bytes);
    if (temp == NULL)
        return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for the run schedule", bytes);
    st = plan_schedule(m, temp, (unsigned char *)(void *)(temp + m->node_count), temp + 2u * m->node_count, err);
    if (st != EM_STATUS_OK) {
        m->allocator.free(m->allocator.user, temp);
        return st;
    }
    pb.block_of = temp + 2u * m->node_count;
    pb.block_first = temp + 3u * m->node_count;
    pb.block_count = temp + 4u * m->node_count;
    pb.block_nodes = temp + 5u * m->node_count;
    pb.blocks = pb.nodes_used = 0;
    for (n = 0; n < m->node_count; ++n) pb.block_of[n] = EM_NONE;
    fuse_groups(m, &pb, temp + 6u * m->node_count);
    fuse_residual_adds(m, temp); /* node_group's words are free again */
    plan_split(m);

    /* last uses, in steps */
    for (n = 0; n < m->node_count; ++n) m->nodes[n].last_use = m->nodes[n].step;
    for (n = 0; n < m->node_count; ++n) { /* a value lives until its last consumer, on any branch */
        uint32_t k;
        for (k = 0; k < m->nodes[n].input_count; ++k) {
            const uint32_t v = m->nodes[n].inputs[k];
            if (v >= m->input_count && m->nodes[v - m->input_count].last_use < m->nodes[n].step)
                m->nodes[v - m->input_count].last_use = m->nodes[n].step;
        }
    }
    for (t = 0; t < m->task_count; ++t)
        if (m->tasks[t].output >= m->input_count) m->nodes[m->tasks[t].output - m->input_count].last_use = end;
    if (m->lane_count > 0) /* a prefix value a lane reads lives until every lane is done: lanes have no steps in common */
        for (n = 0; n < m->node_count; ++n) {
            uint32_t k;
            if (m->nodes[n].lane == EM_NONE) continue;
            for (k = 0; k < m->nodes[n].input_count; ++k) {
                const uint32_t v = m->nodes[n].inputs[k];
                if (v >= m->input_count && m->nodes[v - m->input_count].lane == EM_NONE)
                    m->nodes[v - m->input_count].last_use = end;
            }
            if (m->nodes[n].residual != EM_NONE && m->nodes[n].residual >= m->input_count &&
                m->nodes[m->nodes[n].residual - m->input_count].lane == EM_NONE)
                m->nodes[m->nodes[n].residual - m->input_count].last_use = end;
        }
    for (n = 0; n < m->node_count; ++n) /* a fused ADD's value is its conv's buffer: it lives as long as either */
        if (m->nodes[n].fused_into != EM_NONE && m->nodes[m->nodes[n].fused_into].last_use < m->nodes[n].last_use)
            m->nodes[m->nodes[n].fused_into].last_use = m->nodes[n].last_use;

    /* table groups */
    groups = find_table_groups(m);
    if (groups > 0) {
        m->table_groups = (em_table_group *)m->allocator.alloc(m->allocator.user, groups * sizeof(em_table_group));
        if (m->table_groups == NULL) {
            m->allocator.free(m->allocator.user, temp);
            return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for table groups",
                           (size_t)groups * sizeof(em_table_group));
        }
        m->table_group_count = groups;
        for (i = 0; i < groups; ++i) {
            m->table_groups[i].first_node = EM_NONE;
            m->table_groups[i].last_node = 0;
            m->table_groups[i].bytes = 0;
            m->table_groups[i].offset = 0;
        }
        for (n = 0; n < m->node_count; ++n) { /* first / last in schedule order */
            em_table_group *g;
            const uint32_t node = m->schedule[n];
            if (m->nodes[node].table_group == EM_NONE) continue;
            g = &m->table_groups[m->nodes[node].table_group];
            if (g->first_node == EM_NONE) g->first_node = node;
            g->last_node = node;
            g->bytes = m->nodes[node].table_bytes;
        }
    }

    /* buffers: 2 per node + 1 per table group + 1 per block (blocks <= nodes; node_count <= MAX_NODES) */
    bytes = ((size_t)3 * m->node_count + groups) * (sizeof(plan_buffer) + sizeof(plan_buffer *));
    buffers = (plan_buffer *)m->allocator.alloc(m->allocator.user, bytes);
    if (buffers == NULL) {
        m->allocator.free(m->allocator.user, temp);
        return em_fail(err, EM_STATUS_NO_MEMORY, "out of memory allocating %zu bytes for the context plan", bytes);
    }
    overlapping = (plan_buffer **)(void *)(buffers + (size_t)3 * m->node_count + groups);

    m->max_scratch_bytes = 0;
    for (n = 0; n < m->node_count; ++n) {
        em_node *node = &m->nodes[n];
        size_t scratch = node->scratch_bytes;
        if (node->table_group != EM_NONE) scratch -= node->table_bytes; /* the table lives in the group */
        if (scratch > m->max_scratch_bytes) m->max_scratch_bytes = scratch;
        node->output_offset = node->scratch_offset = 0;
        if (pb.block_of[n] == EM_NONE && node->fused_into == EM_NONE) {
            buffers[count].bytes = output_bytes(node);
            buffers[count].first = node->step;
            buffers[count].last = node->last_use;
            buffers[count].kind = 0;
            buffers[count].id = n;
            buffers[count].lane = node->lane;
            ++count;
        }
        if (scratch > 0) {
            if (!em_align_size(scratch, EM_CONTEXT_ALIGNMENT, &buffers[count].bytes)) {
                m->allocator.free(m->allocator.user, buffers);
                m->allocator.free(m->allocator.user, temp);
                return em_fail_node(err, EM_STATUS_LIMIT, node, "scratch of %zu bytes does not fit in size_t",
                                    scratch);
            }
            buffers[count].first = buffers[count].last = node->step;
            buffers[count].kind = 1;
            buffers[count].id = n;
            buffers[count].lane = node->lane;
            ++count;
        }
    }
    for (b = 0; b < pb.blocks; ++b) { /* a block lives from its first member's step to its last use */
        plan_buffer *buf = &buffers[count++];
        buf->bytes = 0;
        buf->first = end;
        buf->last = 0;
        buf->kind = 3;
        buf->id = b;
        buf->lane = EM_NONE; /* blocks come from run groups, which a lane plan has none of */
        for (i = 0; i < pb.block_count[b]; ++i) {
            const em_node *node = &m->nodes[pb.block_nodes[pb.block_first[b] + i]];
            if (!em_add_size(buf->bytes, output_bytes(node), &buf->bytes)) {
                m->allocator.free(m->allocator.user, buffers);
                m->allocator.free(m->allocator.user, temp);
                return em_fail_node(err, EM_STATUS_LIMIT, node, "the run group's values do not fit in size_t");
            }
            if (node->step < buf->first) buf->first = node->step;
            if (node->last_use > buf->last) buf->last = node->last_use;
        }
    }
    for (i = 0; i < groups; ++i) {
        buffers[count].bytes = m->table_groups[i].bytes; /* a multiple of 64 (the kernels' plan) */
        buffers[count].first = m->nodes[m->table_groups[i].first_node].step;
        buffers[count].last = m->nodes[m->table_groups[i].last_node].step;
        buffers[count].kind = 2;
        buffers[count].id = (uint32_t)i;
        buffers[count].lane = EM_NONE;
        if (m->lane_count > 0) { /* one lane's table, or built before the lanes and read by them to their end */
            uint32_t lane = EM_NONE, mixed = 0;
            for (n = 0; n < m->node_count; ++n) {
                if (m->nodes[n].table_group != i) continue;
                if (m->nodes[n].lane == EM_NONE || (lane != EM_NONE && lane != m->nodes[n].lane)) mixed = 1;
                else lane = m->nodes[n].lane;
            }
            if (!mixed) buffers[count].lane = lane;
            else if (lane != EM_NONE) buffers[count].last = end;
        }
        ++count;
    }

    qsort(buffers, count, sizeof *buffers, by_size_descending);
    for (i = 0; i < count; ++i) {
        plan_buffer *buf = &buffers[i];
        size_t overlaps = 0, offset = 0, k;
        for (j = 0; j < i; ++j)
            if ((buffers[j].first <= buf->last && buf->first <= buffers[j].last) ||
                (buffers[j].lane != EM_NONE && buf->lane != EM_NONE && buffers[j].lane != buf->lane))
                overlapping[overlaps++] = &buffers[j]; /* different lanes run at the same time */
        qsort(overlapping, overlaps, sizeof *overlapping, by_offset);
        for (k = 0; k < overlaps; ++k) {
            const plan_buffer *o = overlapping[k];
            if (offset + buf->bytes <= o->offset) break; /* fits in the gap before o */
            if (o->offset + o->bytes > offset) offset = o->offset + o->bytes;
        }
        buf->offset = offset;
        if (offset > SIZE_MAX - buf->bytes) {
            m->allocator.free(m->allocator.user, buffers);
            m->allocator.free(m->allocator.user, temp);
            return em_fail(err, EM_STATUS_LIMIT, "context: the planned arena does not fit in size_t");
        }
        if (offset + buf->bytes > arena) arena = offset + buf->bytes;
    }
    for (i = 0; i < count; ++i) {
        const plan_buffer *buf = &buffers[i];
        if (buf->kind == 0) m->nodes[buf->id].output_offset = buf->offset;
        else if (buf->kind == 1) m->nodes[buf->id].scratch_offset = buf->offset;
        else if (buf->kind == 2) m->table_groups[buf->id].offset = buf->offset;
        else {
            size_t at = buf->offset;
            for (j = 0; j < pb.block_count[buf->id]; ++j) {
                em_node *node = &m->nodes[pb.block_nodes[pb.block_first[buf->id] + j]];
                node->output_offset = at;
                at += output_bytes(node);
            }
        }
    }
    for (n = 0; n < m->node_count; ++n) /* fused ADDs share their conv's output */
        if (m->nodes[n].fused_into != EM_NONE) m->nodes[n].output_offset = m->nodes[m->nodes[n].fused_into].output_offset;
    m->arena_bytes = arena;
    m->allocator.free(m->allocator.user, buffers);
    m->allocator.free(m->allocator.user, temp);
    return EM_STATUS_OK;
}
