// yaqa-quantize's run(): read, plan, quantize every layer (write_layer.hpp), write atomically.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <new>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "write_layer.hpp"

#if YAQA_HAS_MPI
#include <mpi.h>

#include <yaqa/hessian/state.hpp>
#include <yaqa/mpi/communicator.hpp>
#endif

namespace yaqa::cli {

namespace {

//! True when the file starts with GGUF's magic (unreadable files are left to the real reader).
bool starts_with_gguf_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

//! A --hessians file in llama.cpp's imatrix formats: GGUF content, or the legacy .dat extension.
bool is_imatrix_file(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".dat" || starts_with_gguf_magic(path);
}

//! llama.cpp's general.file_type (enum llama_ftype) for a model quantized to one block type: the
//! "_S" variant for the K-quants (llama.cpp's _M/_L variants mix types).
std::uint32_t llama_file_type(ggml_type t) {
  switch (t) {
    case ggml_type::q4_0: return 2;
    case ggml_type::q8_0: return 7;
    case ggml_type::q5_0: return 8;
    case ggml_type::q2_k: return 10;
    case ggml_type::q3_k: return 11;
    case ggml_type::q4_k: return 14;
    case ggml_type::q5_k: return 16;
    case ggml_type::q6_k: return 18;
    case ggml_type::iq4_nl: return 25;
    default: return 0;
  }
}

//! The number of processes a launcher (mpiexec: OpenMPI, MPICH/Hydra, PMIx) says this one belongs
//! to: 0 when not started by one, -1 when started by one that does not say (PMIx).
int launched_world_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* e = std::getenv(v)) return std::max(1, std::atoi(e));
  return std::getenv("PMIX_RANK") ? -1 : 0;
}

#if YAQA_HAS_MPI
using byte_writer = yaqa::detail::hessian::byte_writer;
using byte_reader = yaqa::detail::hessian::byte_reader;
using checkpoint_entry = std::pair<std::string, layer_result<int_grid<float>>>;

void put_string(byte_writer& w, const std::string& s) {
  w.put(std::uint64_t(s.size()));
  w.put(s.data(), s.size());
}
std::string get_string(byte_reader& r) {
  std::uint64_t n = 0;
  r.get(n);
  std::string s(n, '\0');
  r.get(s.data(), n);
  return s;
}
template <class T>
void put_vector(byte_writer& w, const T* p, std::size_t n) {
  w.put(std::uint64_t(n));
  w.put(p, n);
}
template <class T>
std::vector<T> get_vector(byte_reader& r) {
  std::uint64_t n = 0;
  r.get(n);
  std::vector<T> v(n);
  r.get(v.data(), n);
  return v;
}
template <class T>
void put_matrix(byte_writer& w, const matrix<T>& m) {
  w.put(index(m.rows()));
  w.put(index(m.cols()));
  w.put(m.data(), std::size_t(m.size()));
}
template <class T>
void get_matrix(byte_reader& r, matrix<T>& m) {
  index rows = 0, cols = 0;
  r.get(rows);
  r.get(cols);
  m.resize(rows, cols);
  r.get(m.data(), std::size_t(m.size()));
}

//! One finished layer as bytes (its tensors, metadata, report entry, GGUF blocks or checkpoint
//! result): what a rank sends to rank 0, which adds it to the output exactly as a single process
//! would have (the writers sort tensors and metadata by name; report entries go in plan order).
std::vector<std::byte> pack_layer(const safetensors_writer& w, const nlohmann::ordered_json& rep,
                                  const std::map<std::string, detail::gguf_blocks>& gguf,
                                  const std::vector<checkpoint_entry>& checkpoint) {
  byte_writer b;
  b.put(std::uint64_t(w.size()));
  w.for_each([&](const std::string& name, dtype type, std::span<const index> shape, std::span<const std::byte> bytes) {
    put_string(b, name);
    b.put(std::int32_t(type));
    put_vector(b, shape.data(), shape.size());
    put_vector(b, bytes.data(), bytes.size());
  });
  b.put(std::uint64_t(w.metadata().size()));
  for (const auto& [k, v] : w.metadata()) put_string(b, k), put_string(b, v);
  put_string(b, rep["layers"].empty() ? std::string() : rep["layers"].back().dump());
  b.put(std::uint64_t(gguf.size()));
  for (const auto& [name, g] : gguf) {
    put_string(b, name);
    b.put(std::int32_t(g.type));
    put_vector(b, g.bytes.data(), g.bytes.size());
  }
  b.put(std::uint64_t(checkpoint.size()));
  for (const auto& [name, r] : checkpoint) {  // what write_quantized_checkpoint reads
    put_string(b, name);
    put_matrix(b, r.weights);
    put_matrix(b, r.codes);
    b.put(std::uint64_t(r.params.size()));
    for (const auto& p : r.params) put_vector(b, p.scale.data(), p.scale.size()), put_vector(b, p.zero.data(), p.zero.size());
    put_vector(b, r.group_index.data(), r.group_index.size());
    b.put(std::uint8_t(r.rotated));
  }
  return std::move(b.out);
}

//! Adds a packed layer to rank 0's output.
void unpack_layer(std::span<const std::byte> bytes, safetensors_writer& out, nlohmann::ordered_json& rep,
                  std::map<std::string, detail::gguf_blocks>& gguf, std::vector<checkpoint_entry>& checkpoint) {
  byte_reader b{bytes};
  std::uint64_t count = 0;
  b.get(count);
  for (std::uint64_t t = 0; t < count; ++t) {
    std::string name = get_string(b);
    std::int32_t type = 0;
    b.get(type);
    std::vector<index> shape = get_vector<index>(b);
    const std::vector<std::byte> data = get_vector<std::byte>(b);
    out.add(std::move(name), dtype(type), std::move(shape), data);
  }
  b.get(count);
  for (std::uint64_t t = 0; t < count; ++t) {
    std::string k = get_string(b);
    out.metadata()[k] = get_string(b);
  }
  if (const std::string entry = get_string(b); !entry.empty())
    rep["layers"].push_back(nlohmann::ordered_json::parse(entry));
  b.get(count);
  for (std::uint64_t t = 0; t < count; ++t) {
    std::string name = get_string(b);
    std::int32_t type = 0;
    b.get(type);
    gguf[name] = {ggml_type(type), get_vector<std::byte>(b)};
  }
  b.get(count);
  for (std::uint64_t t = 0; t < count; ++t) {
    checkpoint_entry e;
    e.first = get_string(b);
    get_matrix(b, e.second.weights);
    get_matrix(b, e.second.codes);
    std::uint64_t groups = 0;
    b.get(groups);
    e.second.params.resize(groups);
    for (auto& p : e.second.params) p.scale = get_vector<float>(b), p.zero = get_vector<float>(b);
    e.second.group_index = get_vector<index>(b);
    std::uint8_t rotated = 0;
    b.get(rotated);
    e.second.rotated = rotated != 0;
    checkpoint.push_back(std::move(e));
  }
  b.finish();
}

//! The exception classes a failed layer can end in, so that every rank rethrows the failing
//! rank's error as the same class (main() words the message by class): yaqa::classify_error's
//! table (core/error.hpp), shared with the Python binding.
int error_kind(const std::exception& e) { return int(classify_error(e)); }
[[noreturn]] void throw_error_kind(int kind, const std::string& msg) { throw_error_class(error_class(kind), msg); }

//! The rank of each planned layer: greedy longest-processing-time on the estimated cost
//! m·n·(m+n) (the factorizations and the rounding's feedback products), largest first, ties by
//! plan order, each to the least-loaded rank (ties: the lowest). Deterministic: every rank
//! computes the same split.
std::vector<int> split_layers(const std::vector<planned_layer>& plan, int ranks, std::vector<double>& load) {
  std::vector<double> cost(plan.size());
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const auto& sh = plan[i].weight->shape;
    const double m = sh.size() > 0 ? double(sh[0]) : 1, n = sh.size() > 1 ? double(sh[1]) : 1;
    cost[i] = m * n * (m + n);
  }
  std::vector<std::size_t> order(plan.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return cost[a] > cost[b]; });
  load.assign(std::size_t(ranks), 0.0);
  std::vector<int> owner(plan.size(), 0);
  for (std::size_t i : order) {
    const auto r = std::size_t(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = int(r);
    load[r] += cost[i];
  }
  return owner;
}

//! MPI for this run, when a launcher started it (MPI_Init_thread once per process; main() calls
//! finish_parallel()). Errors come back as mpi_error rather than aborting the job.
std::optional<yaqa::mpi::communicator> start_parallel() {
  if (launched_world_size() == 0) return std::nullopt;
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw mpi_error("yaqa-quantize: MPI_Init_thread failed (started by mpiexec)");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  yaqa::mpi::communicator comm(MPI_COMM_WORLD);
  if (comm.size() == 1) return std::nullopt;
  return comm;
}

//! On rank 0, tells the other ranks at the end of run() whether writing the output failed.
struct final_status {
  const yaqa::mpi::communicator* comm = nullptr;
  int exceptions = std::uncaught_exceptions();
  final_status() = default;
  final_status(const final_status&) = delete;
  final_status& operator=(const final_status&) = delete;
  ~final_status() {
    if (!comm) return;
    int failed = std::uncaught_exceptions() > exceptions ? 1 : 0;
    MPI_Bcast(&failed, 1, MPI_INT, 0, comm->get());
  }
};
#endif
}  // namespace

int parallel_rank() {
#if YAQA_HAS_MPI
  int init = 0, fin = 0, rank = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
#else
  return 0;
#endif
}

void finish_parallel() {
#if YAQA_HAS_MPI
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
#endif
}

run_summary run(const options& o_in, std::ostream& log) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
#if YAQA_HAS_MPI
  // mpiexec -n R: the layers are split across the ranks; rank 0 writes (docs/distributed.md).
  const std::optional<yaqa::mpi::communicator> par = start_parallel();
  const int par_rank = par ? par->rank() : 0;
#else
  const int par_rank = 0;
  yaqa::detail::require(launched_world_size() <= 1, "yaqa-quantize: started by mpiexec with ",
                        launched_world_size(), " processes, but this build has no MPI (its ranks would all "
                        "write the same output); rebuild with MPI (libopenmpi-dev) or run one process");
#endif
  options quiet_rank = o_in;
  quiet_rank.quiet = o_in.quiet || par_rank > 0;  // progress lines from rank 0 only
  const options& o = quiet_rank;
  for (const std::string* in : {&o.weights, &o.hessians}) {
    check_not_forbidden("yaqa-quantize: --out", o.out, {*in});
    if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {*in});
  }
  if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {o.out});

  // Inputs: safetensors or GGUF weights; safetensors factors or a llama.cpp imatrix.
  std::optional<safetensors_file> wst, hst;
  std::optional<gguf_file> wgg;
  std::optional<imatrix> him;
  std::vector<tensor_view> gguf_views;  // the GGUF's plain tensors (block types cannot be re-quantized)
  weight_tensors wts;
  if (starts_with_gguf_magic(o.weights)) {
    wgg.emplace(o.weights);
    for (const gguf_tensor_info& t : wgg->tensors())
      if (ggml_traits(t.type).element) gguf_views.push_back(wgg->view(t));
    wts = {gguf_views, o.weights};
  } else {
    wst.emplace(o.weights);
    wts = weights_of(*wst);
  }
  if (is_imatrix_file(o.hessians))
    him.emplace(read_imatrix(o.hessians));
  else
    hst.emplace(o.hessians);
  const std::vector<planned_layer> plan = him ? plan_layers(o, wts, *him) : plan_layers(o, wts, *hst);
  const bool gguf_out = o.format == output_format::gguf;
  const bool checkpoint_out = o.format == output_format::gptq || o.format == output_format::compressed_tensors;
  yaqa::detail::require(!checkpoint_out || wst.has_value(), "yaqa-quantize: --format ", output_format_name(o.format),
                        " needs safetensors weights (the checkpoint keeps the model's other tensors as they are); '",
                        o.weights, "' is a GGUF file");
  std::vector<std::pair<std::string, layer_result<int_grid<float>>>> checkpoint_layers;
  checkpoint_layers.reserve(plan.size());

  rounding_options ro;
  ro.algorithm = o.algorithm;
  ro.tile_rows = o.tile_rows;
  ro.tile_cols = o.tile_cols;
  ro.incoherence = o.rht;
  ro.seed = o.seed;
  ro.damping.sigma = o.damp;
  ro.act_order = o.act_order;
  ro.static_groups = o.static_groups;
  ro.refine = o.refine;
  ro.cd_sweeps = o.cd_sweeps;
  ro.report_baseline = o.rtn_baseline;
  const cpu_backend backend{o.threads};

  safetensors_writer out;
  out.forbid_path(o.weights);
  out.forbid_path(o.hessians);
  if (!o.report.empty()) out.forbid_path(o.report);
  if (wst) out.metadata() = wst->metadata();
  auto& meta = out.metadata();
  meta["yaqa.version"] = YAQA_VERSION_STRING;
  meta["yaqa.method"] = method_name(o.algorithm);
  meta["yaqa.quantizer"] = quantizer_label(o);
  meta["yaqa.bits"] = std::to_string(o.bits);
  meta["yaqa.seed"] = std::to_string(o.seed);
  meta["yaqa.rht"] = o.rht ? "true" : "false";
  if (!o.sketch.empty()) meta["yaqa.sketch"] = o.sketch;
  std::map<std::string, detail::gguf_blocks> gguf_tensors;  // GGUF output: each quantized layer's blocks

  // A llama.cpp recipe (gguf-mix:NAME): the type of every 2-D weight of the model, by its rules.
  std::map<std::string, ggml_type> recipe;
  const gguf_preset* preset = o.gguf_preset.empty() ? nullptr : find_gguf_preset(o.gguf_preset);
  if (preset) {
    std::vector<gguf_weight> all;
    for (const tensor_view& t : wts.tensors)
      if (t.rank() == 2) all.push_back({std::string(t.name), t.shape[1]});
    if (wgg)  // block-typed weights of the input also count in llama.cpp's layer counters
      for (const gguf_tensor_info& t : wgg->tensors())
        if (!ggml_traits(t.type).element && t.shape.size() == 2) all.push_back({t.name, t.shape[1]});
    gguf_model_facts facts;
    facts.has_imatrix = him.has_value();
    if (wgg)
      if (const gguf_value* a = wgg->find_value("general.architecture"); a && a->is<std::string>()) {
        const std::string arch = a->as<std::string>();
        const gguf_value* h = wgg->find_value(arch + ".attention.head_count");
        const gguf_value* hk = wgg->find_value(arch + ".attention.head_count_kv");
        if (h && hk && h->is<std::uint32_t>() && hk->is<std::uint32_t>() && hk->as<std::uint32_t>() > 0)
          facts.n_gqa = int(h->as<std::uint32_t>() / hk->as<std::uint32_t>());
      }
    recipe = gguf_preset_types(*preset, std::move(all), facts);
  }

  run_summary s;
  auto& rep = s.report;
  rep["tool"] = "yaqa-quantize";
  rep["version"] = YAQA_VERSION_STRING;
  rep["options"] = {{"weights", o.weights},       {"hessians", o.hessians}, {"out", o.out},
                    {"method", method_name(o.algorithm)}, {"quantizer", quantizer_label(o)},
                    {"bits", o.bits},             {"group_size", o.group_size}, {"asym", o.asym},
                    {"mse", o.mse},               {"rht", o.rht},           {"sketch", o.sketch},
                    {"tile", {o.tile_rows, o.tile_cols}}, {"damp", o.damp}, {"seed", o.seed},
                    {"threads", backend.thread_count()}, {"only", o.only},
                    {"trellis", o.quantizer == quantizer_kind::trellis
                                    ? concat_trellis(o.trellis) : std::string()},
                    {"cd_sweeps", o.cd_sweeps}, {"rtn_baseline", o.rtn_baseline},
                    {"refine", refine_method_name(o.refine.method)}, {"sde_pattern", to_string(o.refine.pattern)},
                    {"lwc", o.refine.lwc}, {"refine_steps", o.refine.steps}, {"refine_lr", o.refine.lr},
                    {"refine_lambda", o.refine.lambda}};
  rep["layers"] = nlohmann::ordered_json::array();

  using checkpoint_sink = std::vector<std::pair<std::string, layer_result<int_grid<float>>>>;
  // Layer i of the plan into the given sinks (run()'s own, or a rank's per-layer ones).
  auto quantize_one = [&](std::size_t i, safetensors_writer& dst, nlohmann::ordered_json& dst_rep,
                          std::map<std::string, detail::gguf_blocks>* gguf_sink, checkpoint_sink* checkpoint_dst) {
    const planned_layer& pl = plan[i];
    const tensor_view& wt = *pl.weight;
    const std::string name(wt.name);
    const std::string context = "yaqa-quantize: layer '" + name + "': ";
    try {
      const matrix<float> w = to_matrix<float>(wt);
      const index m = w.rows(), n = w.cols();
      yaqa::detail::check_finite(wt, w, "finite weights");
      matrix<float> h_in;
      if (pl.diagonal) {  // an imatrix: H_in = diag(mean x^2)
        h_in.setZero(n, n);
        h_in.diagonal() = pl.diagonal->diagonals.front().cast<float>();
      } else {
        h_in = to_symmetric_matrix<float>(*pl.hessians.h_in, n);
      }
      const matrix<float> h_out = pl.hessians.h_out ? to_symmetric_matrix<float>(*pl.hessians.h_out, m) : matrix<float>();

      options lo = o;  // a recipe picks the type per weight
      if (preset) {
        const auto t = recipe.find(name);
        yaqa::detail::require<shape_error>(t != recipe.end(), "yaqa-quantize: recipe ", o.gguf_preset, ": the rows of ",
                                           name, " (", n, " weights) fit no GGUF block type (32 or 256 per block)");
        lo.gguf_type = t->second;
        lo.bits = gguf_code_bits(t->second);
      }
      detail::layer_job job{lo, backend, ro, pl, name, w, h_in, h_out, dst, dst_rep, log, i + 1, plan.size(),
                            gguf_sink, checkpoint_dst};
      detail::with_quantizer(lo, view(h_in), [&](const auto& q) { detail::write_layer(q, job); });
    } catch (const yaqa::error&) {
      detail::rethrow_with_context(context);
    }
  };
  std::vector<std::string> quantized;
#if YAQA_HAS_MPI
  std::optional<final_status> status;
  if (par) {
    const yaqa::mpi::communicator& comm = *par;
    std::vector<double> load;
    const std::vector<int> owner = split_layers(plan, comm.size(), load);
    if (!o.quiet) {
      double total = 0;
      for (double l : load) total += l;
      log << "layer-parallel: " << plan.size() << " layers on " << comm.size() << " ranks (estimated cost m*n*(m+n)):";
      for (int r = 0; r < comm.size(); ++r)
        log << " rank " << r << " " << std::count(owner.begin(), owner.end(), r) << " layers "
            << detail::fmt(total > 0 ? 100 * load[std::size_t(r)] / total : 0.0, 3) << " %" << (r + 1 < comm.size() ? "," : "");
      log << std::endl;
    }
    // Compute: each rank its own layers, in plan order, each packed on its own.
    std::map<std::size_t, std::vector<std::byte>> done;
    std::uint64_t failed_at = plan.size();
    int failed_kind = 0;
    std::string failed_msg;
    for (std::size_t i = 0; i < plan.size() && failed_at == plan.size(); ++i) {
      if (owner[i] != comm.rank()) continue;
      try {
        safetensors_writer lw;
        nlohmann::ordered_json lrep = {{"layers", nlohmann::ordered_json::array()}};
        std::map<std::string, detail::gguf_blocks> lg;
        checkpoint_sink lc;
        quantize_one(i, lw, lrep, gguf_out ? &lg : nullptr, checkpoint_out ? &lc : nullptr);
        done[i] = pack_layer(lw, lrep, lg, lc);
      } catch (const std::exception& e) {
        failed_at = i;
        failed_kind = error_kind(e);
        failed_msg = e.what();
      }
    }
    // Every rank learns the first failed layer in plan order (the one a single process would
    // have stopped at) and fails with its owner's message; nothing has been written.
    std::uint64_t first = 0;
    comm.check(MPI_Allreduce(&failed_at, &first, 1, MPI_UINT64_T, MPI_MIN, comm.get()), "MPI_Allreduce");
    if (first < plan.size()) {
      const int from = owner[first];
      comm.broadcast_string(failed_msg, from);
      comm.check(MPI_Bcast(&failed_kind, 1, MPI_INT, from, comm.get()), "MPI_Bcast");
      throw_error_kind(failed_kind, failed_msg);
    }
    // Gather: every finished layer to rank 0, added in plan order.
    constexpr int layer_tag = 7201;
    if (comm.rank() != 0) {
      for (const auto& [i, bytes] : done) comm.send_bytes(bytes, 0, layer_tag);
      int failed = 0;
      comm.check(MPI_Bcast(&failed, 1, MPI_INT, 0, comm.get()), "MPI_Bcast");
      yaqa::detail::require<yaqa::error>(failed == 0, "yaqa-quantize: rank 0 failed to write the output (its message "
                                                      "says why)");
      s.layers = int(done.size());
      return s;
    }
    status.emplace();
    status->comm = &comm;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const std::vector<std::byte> bytes = owner[i] == 0 ? std::move(done[i]) : comm.recv_bytes(owner[i], layer_tag);
      unpack_layer(bytes, out, rep, gguf_tensors, checkpoint_layers);
      quantized.emplace_back(plan[i].weight->name);
    }
  } else
#endif
  for (std::size_t i = 0; i < plan.size(); ++i) {
    quantize_one(i, out, rep, gguf_out ? &gguf_tensors : nullptr, checkpoint_out ? &checkpoint_layers : nullptr);
    quantized.emplace_back(plan[i].weight->name);
  }
  s.layers = int(quantized.size());
  if (checkpoint_out) {
    // GPTQ / compressed-tensors: every other tensor as it is, the layers packed, the config JSON
    // beside the file (quantize_config.json: what GPTQ loaders read; quantization_config.json:
    // the block that goes into the model's config.json).
    safetensors_writer w;
    w.forbid_path(o.weights);
    w.forbid_path(o.hessians);
    if (!o.report.empty()) w.forbid_path(o.report);
    w.metadata() = meta;
    for (const tensor_view& t : wst->tensors())
      if (std::find(quantized.begin(), quantized.end(), t.name) == quantized.end()) {
        w.add_borrowed(t);
        ++s.copied;
      }
    std::vector<quantized_linear<float>> layers;
    for (const auto& [name, r] : checkpoint_layers) layers.emplace_back(name, r);
    checkpoint_options co;
    co.format = o.format == output_format::gptq ? checkpoint_format::gptq : checkpoint_format::compressed_tensors;
    co.act_order = o.act_order;
    co.ignore.clear();  // the modules whose 2-D weight stays unquantized (e.g. lm_head without a Hessian)
    for (const tensor_view& t : wst->tensors()) {
      const std::string nm(t.name);
      if (t.rank() == 2 && nm.size() > 7 && nm.ends_with(".weight") &&
          std::find(quantized.begin(), quantized.end(), nm) == quantized.end())
        co.ignore.push_back(nm.substr(0, nm.size() - 7));
    }
    const int_grid_options grid{.bits = o.bits, .sym = !o.asym, .group_size = o.group_size, .mse = o.mse};
    const std::filesystem::path dir = std::filesystem::absolute(o.out).parent_path();
    const std::filesystem::path cfg = dir / (o.format == output_format::gptq ? "quantize_config.json"
                                                                             : "quantization_config.json");
    for (const std::string* in : {&o.weights, &o.hessians}) check_not_forbidden("yaqa-quantize: the config", cfg, {*in});
    const checkpoint_json j = write_quantized_checkpoint<float>(w, o.out, layers, grid, co);
    atomic_output_file f(cfg, "yaqa-quantize: the checkpoint's config");
    f.write((o.format == output_format::gptq ? j.quantize_config : j.quantization_config).dump(2) + "\n");
    f.commit();
    rep["checkpoint_config"] = {{"path", cfg.string()}, {"quantization_config", j.quantization_config}};
  } else if (gguf_out) {
    // Every KV pair and every tensor of a GGUF input in file order, quantized ones replaced by
    // their blocks; a safetensors input's tensors in its order as plain GGUF types.
    gguf_writer g;
    g.forbid_path(o.weights);
    g.forbid_path(o.hessians);
    if (!o.report.empty()) g.forbid_path(o.report);
    if (wgg) g.copy_from(*wgg, false);
    g.set("general.file_type", gguf_value(preset ? preset->file_type : llama_file_type(o.gguf_type)));
    g.set("general.quantization_version", gguf_value(std::uint32_t{2}));
    for (const auto& [k, v] : meta)
      if (k.rfind("yaqa.", 0) == 0) g.set(k, gguf_value(v));
    auto add = [&](std::string_view name, std::vector<index> shape, auto&& pass_through) {
      const auto q = gguf_tensors.find(std::string(name));
      if (q != gguf_tensors.end()) {
        g.add_borrowed(std::string(name), q->second.type, std::move(shape), q->second.bytes);
      } else {
        pass_through();
        ++s.copied;
      }
    };
    if (wgg) {
      for (const gguf_tensor_info& t : wgg->tensors()) add(t.name, t.shape, [&] { g.add_borrowed(t); });
    } else {
      for (const tensor_view& t : wst->tensors())
        add(t.name, {t.shape.begin(), t.shape.end()}, [&] {
          const auto gt = ggml_type_of(t.type);
          yaqa::detail::require<format_error>(gt.has_value(), "yaqa-quantize: ", yaqa::detail::describe(t), " is ",
                                              safetensors_name(t.type), ", which GGUF cannot store; expected F32, F16, BF16, "
                                              "F64 or I8..I64");
          g.add_borrowed(std::string(t.name), *gt, {t.shape.begin(), t.shape.end()}, t.bytes);
        });
    }
    g.write(o.out);
  } else {
    // Pass everything else through; a name the tool writes itself must not already be an input.
    auto pass = [&](const tensor_view& t) {
      if (std::find(quantized.begin(), quantized.end(), t.name) != quantized.end()) return;
      yaqa::detail::require<format_error>(!out.contains(t.name), "yaqa-quantize: '", o.weights, "' has a tensor '",
                                          t.name, "', a name the output uses for a quantized layer's codes/params");
      out.add_borrowed(t);
      ++s.copied;
    };
    if (wgg) {
      for (const gguf_tensor_info& t : wgg->tensors()) {
        yaqa::detail::require<format_error>(
            ggml_traits(t.type).element.has_value() ||
                std::find(quantized.begin(), quantized.end(), t.name) != quantized.end(),
            "yaqa-quantize: '", o.weights, "' tensor '", t.name, "' is ", ggml_type_name(t.type),
            ", a GGUF block type that safetensors cannot store; write a GGUF (--out NAME.gguf) to copy it");
        pass(wgg->view(t));
      }
    } else {
      for (const tensor_view& t : wst->tensors()) pass(t);
    }
    out.write(o.out);
  }
  rep["copied_tensors"] = s.copied;
  rep["total_seconds"] = std::chrono::duration<double>(clock::now() - t0).count();
  if (!o.report.empty()) {
    atomic_output_file f(o.report, "yaqa-quantize: --report");
    f.write(rep.dump(2) + "\n");
    f.commit();
  }
  if (!o.quiet)
    log << "wrote " << o.out << ": " << s.layers << " quantized, " << s.copied << " copied ("
        << detail::fmt(rep["total_seconds"].get<double>(), 3) << " s)" << std::endl;
  return s;
}

}  // namespace yaqa::cli
