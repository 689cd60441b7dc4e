// The device reductions (<yaqa/backend/cuda/distributed.hpp>) over R = 3 ranks on one GPU: each
// rank is a host thread with its own stream and accumulator, joined by an in-process transport
// (loopback_comm, host-staged point to point), since NCCL allows one rank per GPU. Checked:
// - allreduce gives every rank the bits of the rank-order merge() (bitwise) and the CPU
//   oracle's result over all shards (within gpu_tol); counts are summed;
// - reduce to a root other than 0 gives the root the same bits and leaves the others unchanged;
// - Sketch A's distributed end_pass: the same factors on every rank after each of 4 passes;
// - a rank with another shape, or with no pass open, makes every rank throw.
// With NCCL (YAQA_HAS_NCCL), the real transport on a one-rank communicator (ncclCommInitAll):
// the reductions run its all-gather and broadcast and leave the state unchanged.
// n = 37, m = 53, shards of 29..71 tokens (not multiples of any block size); float and double.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cuda/cuda_support.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#if defined(YAQA_HAS_NCCL)
#include <yaqa/nccl.hpp>
#endif

// One named namespace for the whole file: the CUDA tests are compiled as unity units, where an
// anonymous namespace would merge with test_sketch.cu's (kn, km, as_double ...).
namespace yaqa_test_distributed {
using namespace yaqa;

constexpr yaqa::index kn = 37, km = 53;
constexpr int kRanks = 3;

class loopback_error : public yaqa::error {
 public:
  using error::error;
};

//! Mailboxes between host threads: (from, to) -> FIFO of byte strings.
struct loopback_hub {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int, int>, std::deque<std::vector<std::byte>>> box;
};

//! A device_communicator for ranks that are threads of one process on one GPU. Every transfer
//! synchronizes its stream and stages through the host: slow, but the order of operations is
//! exactly the caller's, which is what the tests check.
struct loopback_comm {
  using error_type = loopback_error;
  loopback_hub* hub;
  int r, n;
  [[nodiscard]] int rank() const { return r; }
  [[nodiscard]] int size() const { return n; }

  // Catch2's assertions are not thread-safe: a failure here throws, and run_ranks reports it.
  static void ok(cudaError_t e) {
    if (e != cudaSuccess) throw loopback_error(std::string("loopback: ") + cudaGetErrorString(e));
  }

  void post(const std::byte* p, std::size_t bytes, int to, cuda::stream_t s) const {
    std::vector<std::byte> v(bytes);
    ok(cudaStreamSynchronize(s));
    if (bytes) ok(cudaMemcpy(v.data(), p, bytes, cudaMemcpyDeviceToHost));
    std::lock_guard lock(hub->mu);
    hub->box[{r, to}].push_back(std::move(v));
    hub->cv.notify_all();
  }
  void take(std::byte* p, std::size_t bytes, int from, cuda::stream_t s) const {
    std::vector<std::byte> v;
    {
      std::unique_lock lock(hub->mu);
      auto& q = hub->box[{from, r}];
      hub->cv.wait(lock, [&] { return !q.empty(); });
      v = std::move(q.front());
      q.pop_front();
    }
    if (v.size() != bytes) throw loopback_error("loopback: message size mismatch");
    ok(cudaStreamSynchronize(s));
    if (bytes) ok(cudaMemcpy(p, v.data(), bytes, cudaMemcpyHostToDevice));
  }

  void all_gather(const std::byte* in, std::byte* out, std::size_t bytes, cuda::stream_t s) const {
    for (int q = 0; q < n; ++q) post(in, bytes, q, s);
    for (int q = 0; q < n; ++q) take(out + std::size_t(q) * bytes, bytes, q, s);
  }
  void send(const std::byte* p, std::size_t bytes, int peer, cuda::stream_t s) const { post(p, bytes, peer, s); }
  void recv(std::byte* p, std::size_t bytes, int peer, cuda::stream_t s) const { take(p, bytes, peer, s); }
  void broadcast(std::byte* p, std::size_t bytes, int root, cuda::stream_t s) const {
    if (r == root) {
      for (int q = 0; q < n; ++q)
        if (q != root) post(p, bytes, q, s);
    } else {
      take(p, bytes, root, s);
    }
  }
};
static_assert(cuda::device_communicator<loopback_comm>);

//! Runs body(rank, comm) on kRanks threads; returns each rank's exception message ("" if none).
std::vector<std::string> run_ranks(const std::function<void(int, const loopback_comm&)>& body) {
  loopback_hub hub;
  std::vector<std::string> errors(kRanks);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r, loopback_comm{&hub, r, kRanks});
      } catch (const std::exception& e) {
        errors[std::size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

template <class T>
struct shard {
  matrix<T> x, g;
};
//! Rank r's tokens: 29 + 21 r rows (29, 50, 71).
template <class T>
std::vector<shard<T>> shards(std::uint64_t seed) {
  std::vector<shard<T>> s;
  for (int r = 0; r < kRanks; ++r) {
    const yaqa::index t = 29 + 21 * r;
    s.push_back({test::random_matrix<T>(t, kn, seed + 10 * r), test::random_matrix<T>(t, km, seed + 10 * r + 5)});
  }
  return s;
}

template <class T>
Eigen::MatrixXd as_double(const matrix<T>& a) {
  return a.template cast<double>();
}

constexpr accumulate_options exact_oracle{.precision = batch_precision::accumulator, .path = sketch_b_path::direct};

void require_no_errors(const std::vector<std::string>& errors) {
  for (int r = 0; r < kRanks; ++r) {
    INFO("rank " << r);
    REQUIRE(errors[std::size_t(r)].empty());
  }
}

TEMPLATE_TEST_CASE("cuda allreduce / reduce of second_moment and sketch_b: rank-order bits on every rank",
                   "[cuda][hessian][distributed]", float, double) {
  using T = TestType;
  const auto data = shards<T>(7);
  const auto& b = test::gpu();

  // The oracles: the rank-order merge() on one stream (bitwise target) and the CPU over all tokens.
  cuda::second_moment<T> m0(b, kn), m1(b, kn), m2(b, kn);
  cuda::sketch_b<T> k0(b, kn, km), k1(b, kn, km), k2(b, kn, km);
  cuda::second_moment<T>* ms[] = {&m0, &m1, &m2};
  cuda::sketch_b<T>* ks[] = {&k0, &k1, &k2};
  second_moment<double> cpu_m(kn, exact_oracle);
  sketch_b<double> cpu_k(kn, km, exact_oracle);
  std::vector<cuda::device_matrix<T>> dx, dg;
  for (int r = 0; r < kRanks; ++r) {
    dx.push_back(test::upload(data[r].x));
    dg.push_back(test::upload(data[r].g));
    ms[r]->add(dx.back().cview());
    ks[r]->add_sequence(dx.back().cview(), dg.back().cview());
    ks[r]->add_sequence(dx.back().cview().block(0, 0, 11, kn), dg.back().cview().block(0, 0, 11, km));
    cpu_m.add(view(data[r].x));
    cpu_k.add_sequence(view(data[r].x), view(data[r].g));
    cpu_k.add_sequence(view(data[r].x).block(0, 0, 11, kn), view(data[r].g).block(0, 0, 11, km));
  }
  m0.merge(m1);
  m0.merge(m2);
  k0.merge(k1);
  k0.merge(k2);
  const matrix<T> want_sum = m0.sum();
  const matrix<T> want_in = cuda::to_host(b, k0.device_sum_in()), want_out = cuda::to_host(b, k0.device_sum_out());
  REQUIRE_THAT(as_double(m0.mean()), test::IsClose(cpu_m.mean(), test::gpu_tol<T>()));
  REQUIRE_THAT(as_double(k0.h_in()), test::IsClose(cpu_k.h_in(), test::gpu_tol<T>()));

  SECTION("allreduce") {
    std::vector<matrix<T>> sum(kRanks), in(kRanks), out(kRanks);
    std::vector<yaqa::index> counts(kRanks), batches(kRanks), seqs(kRanks), tokens(kRanks);
    require_no_errors(run_ranks([&](int r, const loopback_comm& comm) {
      cuda_backend mine;  // this rank's own stream
      cuda::device_matrix<T> rx = cuda::to_device(mine, view(data[r].x)), rg = cuda::to_device(mine, view(data[r].g));
      cuda::second_moment<T> m(mine, kn);
      cuda::sketch_b<T> k(mine, kn, km);
      m.add(rx.cview());
      k.add_sequence(rx.cview(), rg.cview());
      k.add_sequence(rx.cview().block(0, 0, 11, kn), rg.cview().block(0, 0, 11, km));
      cuda::allreduce(comm, m);
      cuda::allreduce(comm, k);
      sum[r] = m.sum();
      in[r] = cuda::to_host(mine, k.device_sum_in());
      out[r] = cuda::to_host(mine, k.device_sum_out());
      counts[r] = m.count();
      batches[r] = m.batches();
      seqs[r] = k.count();
      tokens[r] = k.tokens();
    }));
    for (int r = 0; r < kRanks; ++r) {
      INFO("rank " << r);
      CHECK(sum[r] == want_sum);
      CHECK(in[r] == want_in);
      CHECK(out[r] == want_out);
      CHECK(counts[r] == 29 + 50 + 71);
      CHECK(batches[r] == 3);
      CHECK(seqs[r] == 6);
      CHECK(tokens[r] == 29 + 50 + 71 + 33);
    }
  }

  SECTION("reduce to rank 2") {
    std::vector<matrix<T>> before(kRanks), after(kRanks), in(kRanks);
    std::vector<yaqa::index> counts(kRanks);
    require_no_errors(run_ranks([&](int r, const loopback_comm& comm) {
      cuda_backend mine;
      cuda::device_matrix<T> rx = cuda::to_device(mine, view(data[r].x)), rg = cuda::to_device(mine, view(data[r].g));
      cuda::second_moment<T> m(mine, kn);
      cuda::sketch_b<T> k(mine, kn, km);
      m.add(rx.cview());
      k.add_sequence(rx.cview(), rg.cview());
      k.add_sequence(rx.cview().block(0, 0, 11, kn), rg.cview().block(0, 0, 11, km));
      before[r] = m.sum();
      cuda::reduce(comm, m, 2);
      cuda::reduce(comm, k, 2);
      after[r] = m.sum();
      in[r] = cuda::to_host(mine, k.device_sum_in());
      counts[r] = m.count();
    }));
    CHECK(after[2] == want_sum);
    CHECK(in[2] == want_in);
    CHECK(counts[2] == 29 + 50 + 71);
    for (int r = 0; r < 2; ++r) {
      INFO("rank " << r);
      CHECK(after[r] == before[r]);
      CHECK(counts[r] == 29 + 21 * r);
    }
  }
}

TEMPLATE_TEST_CASE("cuda end_pass(comm, sketch_a): every rank begins each pass from the same factor",
                   "[cuda][hessian][distributed]", float, double) {
  using T = TestType;
  const auto data = shards<T>(21);
  constexpr int passes = 4;
  sketch_a<double> cpu(kn, km, passes, exact_oracle);
  for (int p = 0; p < passes; ++p) {
    cpu.begin_pass();
    for (int r = 0; r < kRanks; ++r) cpu.add(view(data[r].x), view(data[r].g));
    cpu.end_pass();
  }
  std::vector<matrix<T>> h_in(kRanks), h_out(kRanks);
  require_no_errors(run_ranks([&](int r, const loopback_comm& comm) {
    cuda_backend mine;
    cuda::device_matrix<T> rx = cuda::to_device(mine, view(data[r].x)), rg = cuda::to_device(mine, view(data[r].g));
    cuda::sketch_a<T> s(mine, kn, km, passes);
    for (int p = 0; p < passes; ++p) {
      s.begin_pass();
      // two batches per rank: the split must not matter beyond rounding
      s.add(rx.cview().block(0, 0, 13, kn), rg.cview().block(0, 0, 13, km));
      s.add(rx.cview().block(13, 0, rx.rows() - 13, kn), rg.cview().block(13, 0, rx.rows() - 13, km));
      cuda::end_pass(comm, s);
    }
    h_in[r] = s.h_in();
    h_out[r] = s.h_out();
  }));
  REQUIRE_THAT(as_double(h_in[0]), test::IsClose(cpu.h_in(), 100 * test::gpu_tol<T>()));
  REQUIRE_THAT(as_double(h_out[0]), test::IsClose(cpu.h_out(), 100 * test::gpu_tol<T>()));
  for (int r = 1; r < kRanks; ++r) {
    INFO("rank " << r);
    CHECK(h_in[r] == h_in[0]);
    CHECK(h_out[r] == h_out[0]);
  }
}

TEMPLATE_TEST_CASE("cuda reductions: a rank that disagrees makes every rank throw", "[cuda][hessian][distributed]",
                   float, double) {
  using T = TestType;
  SECTION("another n on rank 1") {
    const auto errors = run_ranks([&](int r, const loopback_comm& comm) {
      cuda_backend mine;
      cuda::second_moment<T> m(mine, r == 1 ? kn + 1 : kn);
      cuda::allreduce(comm, m);
    });
    for (int r = 0; r < kRanks; ++r) {
      INFO("rank " << r << ": " << errors[r]);
      CHECK(errors[r].find("yaqa::cuda::allreduce(second_moment): rank 1 of 3 has n = 38, rank 0 n = 37") !=
            std::string::npos);
    }
  }
  SECTION("another kind on rank 2") {
    const auto errors = run_ranks([&](int r, const loopback_comm& comm) {
      cuda_backend mine;
      if (r == 2) {
        cuda::sketch_b<T> k(mine, kn, km);
        cuda::allreduce(comm, k);
      } else {
        cuda::second_moment<T> m(mine, kn);
        cuda::allreduce(comm, m);
      }
    });
    for (int r = 0; r < kRanks; ++r) {
      INFO("rank " << r << ": " << errors[r]);
      CHECK(errors[r].find("rank 2 of 3 has an accumulator of kind cuda::sketch_b, rank 0 cuda::second_moment") !=
            std::string::npos);
    }
  }
  SECTION("no pass open") {
    const auto errors = run_ranks([&](int, const loopback_comm& comm) {
      cuda_backend mine;
      cuda::sketch_a<T> s(mine, kn, km, 2);
      cuda::allreduce_pass(comm, s);
    });
    for (int r = 0; r < kRanks; ++r) {
      INFO("rank " << r << ": " << errors[r]);
      CHECK(errors[r].find("has no pass open (0 of 2 done)") != std::string::npos);
    }
  }
  SECTION("root out of range") {
    const auto errors = run_ranks([&](int, const loopback_comm& comm) {
      cuda_backend mine;
      cuda::second_moment<T> m(mine, kn);
      cuda::reduce(comm, m, 3);
    });
    for (int r = 0; r < kRanks; ++r) CHECK(errors[r].find("argument 'root' is 3; expected a rank in [0, 3)") !=
                                           std::string::npos);
  }
}

#if defined(YAQA_HAS_NCCL)
TEMPLATE_TEST_CASE("nccl communicator: the reductions over a one-rank NCCL communicator",
                   "[cuda][hessian][distributed][nccl]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  ncclComm_t raw = nullptr;
  int dev = 0;
  REQUIRE(cudaGetDevice(&dev) == cudaSuccess);
  REQUIRE(ncclCommInitAll(&raw, 1, &dev) == ncclSuccess);
  {
    const auto comm = nccl::communicator::wrap(raw);
    static_assert(cuda::device_communicator<nccl::communicator>);
    CHECK(comm.rank() == 0);
    CHECK(comm.size() == 1);
    const auto data = shards<T>(5);
    cuda::device_matrix<T> dx = test::upload(data[2].x), dg = test::upload(data[2].g);
    cuda::second_moment<T> m(b, kn);
    m.add(dx.cview());
    const matrix<T> before = m.sum();
    cuda::allreduce(comm, m);
    CHECK(m.sum() == before);
    CHECK(m.count() == 71);
    cuda::sketch_a<T> s(b, kn, km, 2), plain(b, kn, km, 2);
    for (int p = 0; p < 2; ++p) {
      s.begin_pass();
      plain.begin_pass();
      s.add(dx.cview(), dg.cview());
      plain.add(dx.cview(), dg.cview());
      cuda::end_pass(comm, s);
      plain.end_pass();
    }
    CHECK(s.h_in() == plain.h_in());
    CHECK(s.h_out() == plain.h_out());
    cuda::second_moment<T> other(b, kn);
    CHECK_THROWS_AS(cuda::reduce(comm, other, 1), invalid_argument);
  }
  ncclCommDestroy(raw);
  CHECK_THROWS_AS(nccl::communicator::init(nccl::unique_id(), 2, 2), invalid_argument);
  CHECK_THROWS_AS(nccl::communicator::wrap(nullptr), invalid_argument);
}
#endif

}  // namespace yaqa_test_distributed
