// pybind11 bindings of the edgemerge C runtime: the private module `edgemerge._runtime`.
// `edgemerge.runtime.Runtime` is the public face; this file only converts types, checks shapes once,
// and releases the GIL around every run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <time.h>

extern "C" {
#include "edgemerge/em_runtime.h"
}

namespace py = pybind11;

namespace {

struct StatusError {
    int status;
    std::string message;
};

[[noreturn]] void throw_status(const em_error &err) {
    throw StatusError{err.status, std::string(em_status_name(err.status)) + ": " + err.message};
}

struct AlignedFree {
    void operator()(void *p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<unsigned char, AlignedFree>;

AlignedBuffer aligned_alloc_64(size_t bytes) {
    void *p = nullptr;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) throw std::bad_alloc();
    return AlignedBuffer(static_cast<unsigned char *>(p));
}

// A context with its memory, created per call so concurrent calls never share one.
struct Context {
    AlignedBuffer memory;
    em_context *ctx = nullptr;
    explicit Context(const em_model *model) {
        size_t bytes = em_context_size(model);  // <= EM_MAX_CONTEXT_BYTES: em_model_load refuses more
        try {
            memory = aligned_alloc_64(bytes);
        } catch (const std::bad_alloc &) {  // a StatusError, so Python reports one error line, not MemoryError
            throw StatusError{EM_STATUS_NO_MEMORY, std::string(em_status_name(EM_STATUS_NO_MEMORY)) +
                                                       ": cannot allocate a run context of " + std::to_string(bytes) +
                                                       " bytes"};
        }
        em_error err{};
        if (em_context_init(model, memory.get(), bytes, &ctx, &err) != EM_STATUS_OK) throw_status(err);
    }
};

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The inputs and outputs of bench_all / profile_all: one [N, H, W, C] array per graph input, checked against the
// model's input shapes (a ValueError naming the input otherwise); run k reads sample k % N of each. One output
// buffer per task, reused by every run.
class RepeatedRuns {
  public:
    RepeatedRuns(const em_model *model, const std::vector<FloatArray> &inputs) {
        const uint32_t n_inputs = em_model_input_count(model);
        if (inputs.size() != n_inputs)
            throw py::value_error("model has " + std::to_string(n_inputs) + " inputs, got " +
                                  std::to_string(inputs.size()) + " arrays");
        per_sample_.resize(n_inputs);
        samples_.resize(n_inputs);
        base_.resize(n_inputs);
        in_ptr_.resize(n_inputs);
        for (uint32_t i = 0; i < n_inputs; ++i) {
            uint32_t h, w, c;
            em_model_input_shape(model, i, &h, &w, &c);
            const FloatArray &a = inputs[i];
            if (a.ndim() != 4 || a.shape(0) < 1 || a.shape(1) != h || a.shape(2) != w || a.shape(3) != c)
                throw py::value_error("input " + std::to_string(i) + " must have shape (N >= 1, " +
                                      std::to_string(h) + ", " + std::to_string(w) + ", " + std::to_string(c) + ")");
            per_sample_[i] = size_t(h) * w * c;
            samples_[i] = size_t(a.shape(0));
            base_[i] = a.data();
        }
        const uint32_t n_tasks = em_model_task_count(model);
        out_storage_.resize(n_tasks);
        out_ptr_.resize(n_tasks);
        for (uint32_t t = 0; t < n_tasks; ++t) {
            em_task_info info{};
            em_model_task_info(model, t, &info);
            out_storage_[t].resize(info.classes);
            out_ptr_[t] = out_storage_[t].data();
        }
    }
    // The input pointers of run k (valid until the next call).
    const float *const *inputs_of_run(uint64_t k) {
        for (size_t i = 0; i < base_.size(); ++i) in_ptr_[i] = base_[i] + (k % samples_[i]) * per_sample_[i];
        return in_ptr_.data();
    }
    float *const *outputs() { return out_ptr_.data(); }

  private:
    std::vector<size_t> per_sample_, samples_;
    std::vector<const float *> base_, in_ptr_;
    std::vector<std::vector<float>> out_storage_;
    std::vector<float *> out_ptr_;
};

class Model {
  public:
    // kernels: "auto" (em_model_load: the fastest set, or the EM_KERNELS environment variable), or a kernel
    // set by name ("ref", "generic", "sse2", "avx2", "avx512", "neon"; see em_runtime.h).
    // run_groups=False: em_run_all runs every node alone (EM_LOAD_NO_RUN_GROUPS), to compare against.
    // threads > 1: loaded with EM_LOAD_PARALLEL_TASKS and a pool of `threads` workers that every call's
    // context uses (em_run_all runs the task lanes in parallel; a call that finds the pool busy with another
    // call runs its lanes itself). Same output bits for every thread count.
    explicit Model(py::buffer data, const std::string &kernels = "auto", bool run_groups = true,
                   uint32_t threads = 1) {
        if (threads < 1 || threads > EM_MAX_THREADS)
            throw py::value_error("threads must be 1.." + std::to_string(EM_MAX_THREADS) + ", got " +
                                  std::to_string(threads));
        py::buffer_info info = data.request();
        size_ = static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize);
        buffer_ = aligned_alloc_64(size_);
        std::memcpy(buffer_.get(), info.ptr, size_);
        em_error err{};
        em_status status;
        if (kernels == "auto" && run_groups && threads == 1) {
            status = em_model_load(buffer_.get(), size_, nullptr, &model_, &err);
        } else {
            em_load_options options{};
            options.flags = (run_groups ? 0u : EM_LOAD_NO_RUN_GROUPS) | (threads > 1 ? EM_LOAD_PARALLEL_TASKS : 0u);
            if (kernels == "auto") {
                const char *env = std::getenv("EM_KERNELS");   // as em_model_load does
                if (env != nullptr && env[0] != '\0' && !em_kernels_from_name(env, &options.kernels))
                    throw py::value_error(std::string("EM_KERNELS='") + env + "' names no kernel set");
            } else if (!em_kernels_from_name(kernels.c_str(), &options.kernels))
                throw py::value_error("unknown kernel set '" + kernels +
                                      "' (auto, ref, generic, sse2, avx2, avx512, neon)");
            status = em_model_load_ex(buffer_.get(), size_, nullptr, &options, &model_, &err);
        }
        if (status != EM_STATUS_OK) throw_status(err);
        if (threads > 1 && em_pool_create(threads, nullptr, &pool_, &err) != EM_STATUS_OK) {
            em_model_free(model_);
            throw_status(err);
        }
    }
    ~Model() {
        em_pool_free(pool_);  // no call is running: a call holds a reference to the Python object
        em_model_free(model_);
    }
    uint32_t threads() const { return em_pool_threads(pool_); }
    uint32_t task_lanes() const { return em_model_task_lanes(model_); }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    uint32_t format_version() const { return em_model_format_version(model_); }
    std::string kernels() const { return em_kernels_name(em_model_kernels(model_)); }
    size_t context_bytes() const { return em_context_size(model_); }
    size_t arena_bytes() const { return em_model_arena_bytes(model_); }
    size_t values_bytes() const { return em_model_values_bytes(model_); }
    size_t packed_bytes() const { return em_model_packed_bytes(model_); }
    size_t file_bytes() const { return size_; }

    py::list tasks() const {
        py::list out;
        for (uint32_t t = 0; t < em_model_task_count(model_); ++t) {
            em_task_info info{};
            em_model_task_info(model_, t, &info);
            py::dict d;
            d["name"] = std::string(info.name);
            d["input_index"] = info.input_index;
            d["input_shape"] = py::make_tuple(info.input_h, info.input_w, info.input_c);
            d["classes"] = info.classes;
            out.append(d);
        }
        return out;
    }

    py::list nodes() const {
        py::list out;
        for (uint32_t n = 0; n < em_model_node_count(model_); ++n) {
            em_node_info info{};
            em_model_node_info(model_, n, &info);
            py::dict d;
            d["op"] = info.op;
            d["input"] = info.input;
            py::list inputs; // every value read, input 0 first (format v2: several for ADD / CONCAT / MUL)
            for (uint32_t k = 0; k < info.input_count; ++k) {
                uint32_t v = 0;
                em_model_node_input(model_, n, k, &v);
                inputs.append(v);
            }
            d["inputs"] = py::tuple(inputs);
            d["out_shape"] = py::make_tuple(info.out_h, info.out_w, info.out_c);
            d["seg_len"] = info.seg_len;
            d["codewords"] = info.codewords;
            d["name"] = std::string(info.name ? info.name : "");
            d["kernel"] = std::string(info.kernel ? info.kernel : "");
            // em_run_all runs a run group's members (same weights, different tasks) as one step
            d["run_group"] = info.run_group == EM_NONE ? py::object(py::none()) : py::object(py::int_(info.run_group));
            d["run_group_fused"] = info.run_group_fused != 0;
            out.append(d);
        }
        return out;
    }

    // x: [N, H, W, C] or [H, W, C] float32 → [N, classes] logits.
    py::array_t<float> run(uint32_t task, FloatArray x) const {
        em_task_info info{};
        em_error err{};
        if (em_model_task_info(model_, task, &info) != EM_STATUS_OK)
            throw py::index_error("task index " + std::to_string(task) + " out of range");
        const size_t per_sample = size_t(info.input_h) * info.input_w * info.input_c;
        const bool single = x.ndim() == 3;
        if (!(x.ndim() == 4 || single) || x.shape(x.ndim() - 3) != info.input_h ||
            x.shape(x.ndim() - 2) != info.input_w || x.shape(x.ndim() - 1) != info.input_c) {
            std::string got = "(";
            for (py::ssize_t i = 0; i < x.ndim(); ++i) got += (i ? ", " : "") + std::to_string(x.shape(i));
            throw py::value_error("task '" + std::string(info.name) + "' expects input of shape (N, " +
                                  std::to_string(info.input_h) + ", " + std::to_string(info.input_w) + ", " +
                                  std::to_string(info.input_c) + "), got " + got + ")");
        }
        const size_t batch = single ? 1 : size_t(x.shape(0));
        py::array_t<float> y({py::ssize_t(batch), py::ssize_t(info.classes)});
        const float *src = x.data();
        float *dst = y.mutable_data();
        {
            py::gil_scoped_release release;
            Context context(model_);
            em_context_set_pool(context.ctx, pool_);
            for (size_t i = 0; i < batch; ++i) {
                if (em_run_task(context.ctx, task, src + i * per_sample, per_sample, dst + i * info.classes,
                                info.classes, &err) != EM_STATUS_OK)
                    throw_status(err);
            }
        }
        return y;
    }

    // inputs[i]: [N, H, W, C] batch for graph input i → (list of [N, classes] per task, node run counts).
    py::tuple run_all(std::vector<FloatArray> inputs) const {
        const uint32_t n_inputs = em_model_input_count(model_);
        if (inputs.size() != n_inputs)
            throw py::value_error("model has " + std::to_string(n_inputs) + " inputs, got " +
                                  std::to_string(inputs.size()) + " arrays");
        size_t batch = 0;
        std::vector<size_t> per_sample(n_inputs);
        for (uint32_t i = 0; i < n_inputs; ++i) {
            uint32_t h, w, c;
            em_model_input_shape(model_, i, &h, &w, &c);
            const FloatArray &a = inputs[i];
            if (a.ndim() != 4 || a.shape(1) != h || a.shape(2) != w || a.shape(3) != c)
                throw py::value_error("input " + std::to_string(i) + " must have shape (N, " + std::to_string(h) +
                                      ", " + std::to_string(w) + ", " + std::to_string(c) + ")");
            if (i == 0) batch = size_t(a.shape(0));
            if (size_t(a.shape(0)) != batch) throw py::value_error("all inputs need the same batch size");
            per_sample[i] = size_t(h) * w * c;
        }
        const uint32_t n_tasks = em_model_task_count(model_);
        std::vector<py::array_t<float>> outputs;
        std::vector<uint32_t> classes(n_tasks);
        for (uint32_t t = 0; t < n_tasks; ++t) {
            em_task_info info{};
            em_model_task_info(model_, t, &info);
            classes[t] = info.classes;
            outputs.emplace_back(std::vector<py::ssize_t>{py::ssize_t(batch), py::ssize_t(info.classes)});
        }
        std::vector<const float *> in_base(n_inputs);
        std::vector<float *> out_base(n_tasks);
        for (uint32_t i = 0; i < n_inputs; ++i) in_base[i] = inputs[i].data();
        for (uint32_t t = 0; t < n_tasks; ++t) out_base[t] = outputs[t].mutable_data();
        std::vector<uint64_t> runs(em_model_node_count(model_));
        {
            py::gil_scoped_release release;
            Context context(model_);
            em_context_set_pool(context.ctx, pool_);
            std::vector<const float *> in_ptr(n_inputs);
            std::vector<float *> out_ptr(n_tasks);
            em_error err{};
            for (size_t b = 0; b < batch; ++b) {
                for (uint32_t i = 0; i < n_inputs; ++i) in_ptr[i] = in_base[i] + b * per_sample[i];
                for (uint32_t t = 0; t < n_tasks; ++t) out_ptr[t] = out_base[t] + b * classes[t];
                if (em_run_all(context.ctx, in_ptr.data(), out_ptr.data(), &err) != EM_STATUS_OK)
                    throw_status(err);
            }
            for (uint32_t n = 0; n < runs.size(); ++n) runs[n] = em_context_node_runs(context.ctx, n);
        }
        py::list out_list;
        for (auto &o : outputs) out_list.append(o);
        return py::make_tuple(out_list, runs);
    }

    // Times em_run_all in C: `warmup` untimed runs, then `runs` timed ones, run k reading sample k % N of the
    // [N, H, W, C] inputs (one array per graph input, as run_all). One context is reused; the GIL is
    // released; only em_run_all is inside the clock (CLOCK_MONOTONIC). Returns per-run nanoseconds.
    py::array_t<int64_t> bench_all(std::vector<FloatArray> inputs, uint32_t warmup, uint32_t runs) const {
        RepeatedRuns batches(model_, inputs);
        py::array_t<int64_t> times(static_cast<py::ssize_t>(runs));
        int64_t *ns = times.mutable_data();
        {
            py::gil_scoped_release release;
            Context context(model_);
            em_context_set_pool(context.ctx, pool_);
            em_error err{};
            for (uint64_t k = 0; k < uint64_t(warmup) + runs; ++k) {
                const float *const *in = batches.inputs_of_run(k);
                struct timespec start, stop;
                clock_gettime(CLOCK_MONOTONIC, &start);
                const em_status status = em_run_all(context.ctx, in, batches.outputs(), &err);
                clock_gettime(CLOCK_MONOTONIC, &stop);
                if (status != EM_STATUS_OK) throw_status(err);
                if (k >= warmup)
                    ns[k - warmup] = int64_t(stop.tv_sec - start.tv_sec) * 1000000000 + (stop.tv_nsec - start.tv_nsec);
            }
        }
        return times;
    }

    // Per-node time of em_run_all from the C profiling API: `warmup` runs with profiling off, then `runs`
    // profiled runs (sample k % N, as bench_all) in one context with the GIL released. Returns one dict per
    // node: runs, total_ns, table_ns, accumulate_ns (em_node_profile).
    py::list profile_all(std::vector<FloatArray> inputs, uint32_t warmup, uint32_t runs) const {
        RepeatedRuns batches(model_, inputs);
        std::vector<em_node_profile> profiles(em_model_node_count(model_));
        {
            py::gil_scoped_release release;
            Context context(model_);
            em_context_set_pool(context.ctx, pool_);
            em_error err{};
            for (uint64_t k = 0; k < uint64_t(warmup) + runs; ++k) {
                if (k == warmup && em_context_enable_profiling(context.ctx, 1) != EM_STATUS_OK)
                    throw StatusError{EM_STATUS_BAD_ARGUMENT, "cannot enable profiling"};
                if (em_run_all(context.ctx, batches.inputs_of_run(k), batches.outputs(), &err) != EM_STATUS_OK)
                    throw_status(err);
            }
            for (uint32_t n = 0; n < profiles.size(); ++n) em_context_node_profile(context.ctx, n, &profiles[n]);
        }
        py::list out;
        for (const em_node_profile &p : profiles) {
            py::dict d;
            d["runs"] = p.runs;
            d["total_ns"] = p.total_ns;
            d["table_ns"] = p.table_ns;
            d["accumulate_ns"] = p.accumulate_ns;
            out.append(d);
        }
        return out;
    }

  private:
    AlignedBuffer buffer_;
    size_t size_ = 0;
    em_model *model_ = nullptr;
    em_pool *pool_ = nullptr;  // threads > 1
};

}  // namespace

PYBIND11_MODULE(_runtime, m) {
    m.doc() = "edgemerge C runtime (private; use edgemerge.Runtime)";
    static py::exception<StatusError> status_error(m, "StatusError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const StatusError &e) {
            py::object args = py::make_tuple(e.status, e.message);
            PyErr_SetObject(status_error.ptr(), args.ptr());
        }
    });
    m.def("compiled_format_constants", []() {
        py::dict d;
        d["MAGIC_U32"] = EM_MAGIC_U32;
        d["VERSION"] = EM_VERSION;
        d["MIN_VERSION"] = EM_MIN_VERSION;
        d["MAX_NODE_INPUTS"] = EM_MAX_NODE_INPUTS;
        d["SENTINEL_U32"] = EM_SENTINEL_U32;
        d["SENTINEL_F32_BITS"] = EM_SENTINEL_F32_BITS;
        d["ALIGNMENT"] = EM_ALIGNMENT;
        d["NODE_RECORD_BYTES"] = EM_NODE_RECORD_BYTES;
        d["TENSOR_RECORD_BYTES"] = EM_TENSOR_RECORD_BYTES;
        return d;
    }, "A few constants as compiled into this module (the header itself is compared by a test).");
    m.def("status_name", [](int status) { return std::string(em_status_name(status)); });
    m.def("cpu_features", []() { return std::string(em_runtime_cpu_features()); },
          "The CPU this build targets and the kernel set it uses.");
    m.def("kernel_sets", []() {
        py::list out;
        for (uint32_t k = 0; k < EM_KERNELS_COUNT; ++k)
            if (em_kernels_available(k)) out.append(std::string(em_kernels_name(k)));
        return out;
    }, "Kernel sets this build can run on this CPU (\"auto\" and \"ref\" always).");
    m.def("set_blas_threads", [](int threads) { em_runtime_set_blas_threads(threads); }, py::arg("threads"),
          "Threads the linked BLAS may use (process-wide; no-op without BLAS). Benchmarks set 1.");
    py::class_<Model>(m, "Model")
        .def(py::init<py::buffer, const std::string &, bool, uint32_t>(), py::arg("data"), py::arg("kernels") = "auto",
             py::arg("run_groups") = true, py::arg("threads") = 1,
             "Validates and loads an .emm image (copied, 64-byte aligned) with a kernel set (\"auto\", \"ref\", ...); "
             "run_groups=False makes run_all run every node alone (no run groups), for comparisons.")
        .def_property_readonly("format_version", &Model::format_version)
        .def_property_readonly("kernels", &Model::kernels, "The kernel set the model runs (\"auto\" resolved).")
        .def_property_readonly("context_bytes", &Model::context_bytes)
        .def_property_readonly("arena_bytes", &Model::arena_bytes,
                               "Peak activation memory of a run: node outputs, scratch and tables, reused by liveness.")
        .def_property_readonly("values_bytes", &Model::values_bytes,
                               "What every node output would take held at once (no reuse).")
        .def_property_readonly("file_bytes", &Model::file_bytes)
        .def_property_readonly("packed_bytes", &Model::packed_bytes,
                               "Bytes allocated at load for kernel data derived from the file (decoded weights, "
                               "unpacked indices): model memory beyond the file (em_model_packed_bytes).")
        .def_property_readonly("threads", &Model::threads, "Workers of the model's pool (1: serial).")
        .def_property_readonly("task_lanes", &Model::task_lanes,
                               "Task lanes run_all can run in parallel (0: the serial plan).")
        .def("tasks", &Model::tasks)
        .def("nodes", &Model::nodes)
        .def("run", &Model::run, py::arg("task"), py::arg("x"))
        .def("run_all", &Model::run_all, py::arg("inputs"))
        .def("bench_all", &Model::bench_all, py::arg("inputs"), py::arg("warmup") = 0, py::arg("runs") = 1,
             "Per-run nanoseconds of em_run_all (warm-up runs untimed), timed in C with the GIL released.")
        .def("profile_all", &Model::profile_all, py::arg("inputs"), py::arg("warmup") = 0, py::arg("runs") = 1,
             "Per-node time (runs, total_ns, table_ns, accumulate_ns) of profiled em_run_all runs.");
}
