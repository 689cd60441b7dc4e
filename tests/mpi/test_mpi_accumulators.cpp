// yaqa::mpi reductions, run by ctest under mpiexec -n 2 and -n 3 (tests/mpi/CMakeLists.txt).
// Not Catch2: a failed REQUIRE on one rank would leave the others waiting in a collective, so each
// check records a failure and every rank runs every collective; the failures are summed at the end.
//
// Data: the same global batches on every rank (seeded), batch b fed by rank b % R. Checks:
// - double sums: the distributed sum equals, bitwise, the single-process merge of the R shards in
//   rank order, and a single accumulator fed every batch within 1e-12 relative;
// - float sums: the same bitwise equality on seeded random states (check_float_states);
// - two runs give the same bits; reduce() to the last rank gives allreduce's bits;
// - Sketch A over 3 passes equals the single-process worker protocol bitwise;
// - mismatched shapes / passes / roots throw on every rank, naming the rank.
// `--bench N` instead prints timings (docs/distributed.md); `--write-model DIR [--bad]` (no MPI)
// writes the small model of the layer-parallel CLI test (tests/mpi/cli_parallel.cmake).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <support/generators.hpp>
#include <yaqa/io/safetensors.hpp>
#include <yaqa/mpi/accumulators.hpp>  // not <yaqa/mpi.hpp>: the whole library would double the compile time

using namespace yaqa;

namespace {

int failures = 0;
int world_rank = 0;

void check(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::cerr << "rank " << world_rank << ": FAILED: " << what << std::endl;
}

template <class M>
bool same_bits(const M& a, const M& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(typename M::Scalar) * std::size_t(a.size())) == 0;
}
template <class M>
double rel(const M& a, const M& b) {
  const double d = (a.template cast<double>() - b.template cast<double>()).norm();
  const double z = b.template cast<double>().norm();
  return z > 0 ? d / z : d;
}

// Batches of uneven sizes, one empty, so shards differ in size and token count.
template <class T>
std::vector<matrix<T>> batches(yaqa::index cols, std::uint64_t seed, int count = 7) {
  std::vector<matrix<T>> v;
  for (int b = 0; b < count; ++b) {
    const yaqa::index rows = b == 3 ? 0 : 5 + 9 * b;
    v.push_back(test::random_matrix<T>(rows, cols, seed + std::uint64_t(b), 1.0 + 0.25 * b));
  }
  return v;
}

template <class Acc>
void check_second_moment(const mpi::communicator& comm, const char* acc_name) {
  const int R = comm.size(), me = comm.rank();
  const yaqa::index n = 45;
  const auto xs = batches<Acc>(n, 11);
  auto run = [&] {
    second_moment<Acc> a(n);
    for (std::size_t b = 0; b < xs.size(); ++b)
      if (int(b) % R == me) a.add(view(xs[b]));
    mpi::allreduce(comm, a);
    return a;
  };
  const second_moment<Acc> d = run(), d2 = run();
  second_moment<Acc> merged(n), single(n);
  for (int r = 0; r < R; ++r) {
    second_moment<Acc> shard(n);
    for (std::size_t b = 0; b < xs.size(); ++b)
      if (int(b) % R == r) shard.add(view(xs[b]));
    merged.merge(shard);
  }
  for (const auto& x : xs) single.add(view(x));
  const std::string what = std::string("second_moment<") + acc_name + ">";
  check(same_bits(d.sum(), merged.sum()), what + ": allreduce == rank-order merge, bitwise");
  check(same_bits(d.sum(), d2.sum()), what + ": two runs give the same bits");
  check(d.count() == single.count() && d.batches() == single.batches(), what + ": token and batch counts");
  const double tol = sizeof(Acc) == 8 ? 1e-12 : 1e-5;
  check(rel(d.mean(), single.mean()) <= tol, what + ": matches one accumulator fed all batches");

  second_moment<Acc> r(n);
  for (std::size_t b = 0; b < xs.size(); ++b)
    if (int(b) % R == me) r.add(view(xs[b]));
  const matrix<Acc> before = r.sum();
  mpi::reduce(comm, r, R - 1);
  check(me == R - 1 ? same_bits(r.sum(), d.sum()) : same_bits(r.sum(), before),
        what + ": reduce to the last rank (root has the sum, others unchanged)");
}

template <class Acc>
void check_diagonal(const mpi::communicator& comm, const char* acc_name) {
  const int R = comm.size(), me = comm.rank();
  const yaqa::index n = 33;
  const auto xs = batches<Acc>(n, 21);
  diagonal_second_moment<Acc> d(n), merged(n), single(n);
  for (std::size_t b = 0; b < xs.size(); ++b)
    if (int(b) % R == me) d.add(view(xs[b]));
  mpi::allreduce(comm, d);
  for (int r = 0; r < R; ++r) {
    diagonal_second_moment<Acc> shard(n);
    for (std::size_t b = 0; b < xs.size(); ++b)
      if (int(b) % R == r) shard.add(view(xs[b]));
    merged.merge(shard);
  }
  for (const auto& x : xs) single.add(view(x));
  const std::string what = std::string("diagonal_second_moment<") + acc_name + ">";
  check(same_bits(d.sum(), merged.sum()), what + ": allreduce == rank-order merge, bitwise");
  check(d.count() == single.count(), what + ": token count");
  check(rel(d.mean(), single.mean()) <= (sizeof(Acc) == 8 ? 1e-12 : 1e-5), what + ": matches one accumulator");
}

template <class Acc>
void check_sketch_b(const mpi::communicator& comm, const char* acc_name) {
  const int R = comm.size(), me = comm.rank();
  const yaqa::index n = 29, m = 19;
  const auto xs = batches<Acc>(n, 31), gs = batches<Acc>(m, 41);
  sketch_b<Acc> d(n, m), merged(n, m), single(n, m);
  for (std::size_t b = 0; b < xs.size(); ++b)
    if (int(b) % R == me) d.add_sequence(view(xs[b]), view(gs[b]));
  mpi::allreduce(comm, d);
  for (int r = 0; r < R; ++r) {
    sketch_b<Acc> shard(n, m);
    for (std::size_t b = 0; b < xs.size(); ++b)
      if (int(b) % R == r) shard.add_sequence(view(xs[b]), view(gs[b]));
    merged.merge(shard);
  }
  for (std::size_t b = 0; b < xs.size(); ++b) single.add_sequence(view(xs[b]), view(gs[b]));
  const std::string what = std::string("sketch_b<") + acc_name + ">";
  check(same_bits(d.h_in(), merged.h_in()) && same_bits(d.h_out(), merged.h_out()),
        what + ": allreduce == rank-order merge, bitwise");
  check(d.count() == single.count() && d.tokens() == single.tokens(), what + ": sequence and token counts");
  const double tol = sizeof(Acc) == 8 ? 1e-12 : 1e-5;
  check(rel(d.h_in(), single.h_in()) <= tol && rel(d.h_out(), single.h_out()) <= tol, what + ": matches one sketch");
}

template <class Acc>
void check_sketch_a(const mpi::communicator& comm, const char* acc_name) {
  const int R = comm.size(), me = comm.rank();
  const yaqa::index n = 27, m = 22;
  const int passes = 3;
  const auto xs = batches<Acc>(n, 51), gs = batches<Acc>(m, 61);
  auto distributed = [&] {
    sketch_a<Acc> s(n, m, passes);
    for (int p = 0; p < passes; ++p) {
      s.begin_pass();
      for (std::size_t b = 0; b < xs.size(); ++b)
        if (int(b) % R == me) s.add(view(xs[b]), view(gs[b]));
      mpi::end_pass(comm, s);
    }
    return s;
  };
  const sketch_a<Acc> d = distributed(), d2 = distributed();
  // The documented single-process worker protocol: copy after end_pass, shard, merge_pass in order.
  sketch_a<Acc> ref(n, m, passes), single(n, m, passes);
  for (int p = 0; p < passes; ++p) {
    std::vector<sketch_a<Acc>> workers(std::size_t(R), ref);
    for (int r = 0; r < R; ++r) {
      workers[std::size_t(r)].begin_pass();
      for (std::size_t b = 0; b < xs.size(); ++b)
        if (int(b) % R == r) workers[std::size_t(r)].add(view(xs[b]), view(gs[b]));
    }
    for (int r = 1; r < R; ++r) workers[0].merge_pass(workers[std::size_t(r)]);
    workers[0].end_pass();
    ref = workers[0];
    single.begin_pass();
    for (std::size_t b = 0; b < xs.size(); ++b) single.add(view(xs[b]), view(gs[b]));
    single.end_pass();
  }
  const std::string what = std::string("sketch_a<") + acc_name + "> over 3 passes";
  check(d.done(), what + ": done on every rank");
  check(same_bits(d.h_in(), ref.h_in()) && same_bits(d.h_out(), ref.h_out()),
        what + ": == single-process merge_pass in rank order, bitwise");
  check(same_bits(d.h_in(), d2.h_in()) && same_bits(d.h_out(), d2.h_out()), what + ": two runs, same bits");
  const double tol = sizeof(Acc) == 8 ? 1e-12 : 1e-5;
  check(rel(d.h_in(), single.h_in()) <= tol && rel(d.h_out(), single.h_out()) <= tol,
        what + ": matches one sketch fed all batches");
}

// Float sums, without instantiating the float compute path (about 16 s more compile time; the
// accumulators' own float arithmetic is tested in tests/hessian): each shard's state is loaded
// with seeded random counts and sums through state_access, the hook the reductions use.
template <class A>
void fill_state(A& a, int counts, std::uint64_t seed) {
  using S = yaqa::detail::hessian::state_access<A>;
  std::vector<std::byte> bytes = S::save(a);
  const std::size_t head = std::size_t(counts) * sizeof(yaqa::index);
  for (int k = 0; k < counts; ++k) {
    const yaqa::index c = yaqa::index(5 + seed % 11 + std::uint64_t(k));
    std::memcpy(bytes.data() + std::size_t(k) * sizeof(yaqa::index), &c, sizeof c);
  }
  const std::size_t values = (bytes.size() - head) / sizeof(float);
  const matrix<float> r = test::random_matrix<float>(yaqa::index(values), 1, seed);
  std::memcpy(bytes.data() + head, r.data(), values * sizeof(float));
  S::load(a, bytes);
}

void check_float_states(const mpi::communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  const auto seed = [](int rank, int part) { return std::uint64_t(1000 + 17 * rank + part); };
  {
    second_moment<float> d(13), merged(13);
    fill_state(d, 2, seed(me, 0));
    mpi::allreduce(comm, d);
    for (int r = 0; r < R; ++r) {
      second_moment<float> shard(13);
      fill_state(shard, 2, seed(r, 0));
      merged.merge(shard);
    }
    check(same_bits(d.sum(), merged.sum()) && d.count() == merged.count() && d.batches() == merged.batches(),
          "second_moment<float>: allreduce == rank-order merge, bitwise");
  }
  {
    diagonal_second_moment<float> d(13), merged(13);
    fill_state(d, 2, seed(me, 1));
    mpi::allreduce(comm, d);
    for (int r = 0; r < R; ++r) {
      diagonal_second_moment<float> shard(13);
      fill_state(shard, 2, seed(r, 1));
      merged.merge(shard);
    }
    check(same_bits(d.sum(), merged.sum()) && d.count() == merged.count(),
          "diagonal_second_moment<float>: allreduce == rank-order merge, bitwise");
  }
  {
    sketch_b<float> d(11, 7), merged(11, 7);
    fill_state(d, 3, seed(me, 2));
    mpi::allreduce(comm, d);
    for (int r = 0; r < R; ++r) {
      sketch_b<float> shard(11, 7);
      fill_state(shard, 3, seed(r, 2));
      merged.merge(shard);
    }
    check(same_bits(d.h_in(), merged.h_in()) && same_bits(d.h_out(), merged.h_out()) && d.tokens() == merged.tokens(),
          "sketch_b<float>: allreduce == rank-order merge, bitwise");
  }
  {
    sketch_a<float> d(11, 7, 3), ref(11, 7, 3);
    for (int p = 0; p < 3; ++p) {
      d.begin_pass();
      fill_state(d, 2, seed(me, 10 + p));
      mpi::end_pass(comm, d);
      std::vector<sketch_a<float>> workers(std::size_t(R), ref);
      for (int r = 0; r < R; ++r) {
        workers[std::size_t(r)].begin_pass();
        fill_state(workers[std::size_t(r)], 2, seed(r, 10 + p));
      }
      for (int r = 1; r < R; ++r) workers[0].merge_pass(workers[std::size_t(r)]);
      workers[0].end_pass();
      ref = workers[0];
    }
    check(same_bits(d.h_in(), ref.h_in()) && same_bits(d.h_out(), ref.h_out()),
          "sketch_a<float> over 3 passes: == single-process merge_pass in rank order, bitwise");
  }
}

// Runs f on every rank; every rank must throw E whose message contains each of `needles`.
template <class E, class F>
void expect_all_throw(const std::string& what, F&& f, std::vector<std::string> needles) {
  std::string msg;
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("wrong exception type: ") + e.what();
  }
  bool ok = thrown;
  for (const auto& nd : needles) ok = ok && msg.find(nd) != std::string::npos;
  check(ok, what + " (got: '" + msg + "')");
}

void check_mismatches(const mpi::communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  const std::string last = "rank " + std::to_string(R - 1);
  expect_all_throw<mpi_error>("second_moment with a different n on the last rank", [&] {
    second_moment<double> a(me == R - 1 ? 9 : 8);
    mpi::allreduce(comm, a);
  }, {"allreduce(second_moment)", last, "n = 9", "rank 0 n = 8"});
  expect_all_throw<mpi_error>("sketch_b with float on the last rank", [&] {
    if (me == R - 1) {
      sketch_b<float> s(4, 3);
      mpi::allreduce(comm, s);
    } else {
      sketch_b<double> s(4, 3);
      mpi::allreduce(comm, s);
    }
  }, {last, "32-bit", "rank 0 64-bit"});
  expect_all_throw<mpi_error>("sketch_a: the last rank has not begun the pass", [&] {
    sketch_a<double> s(5, 4, 2);
    if (me != R - 1) s.begin_pass();
    mpi::end_pass(comm, s);
  }, {"allreduce_pass(sketch_a)", last, "not open"});
  expect_all_throw<mpi_error>("sketch_a: the last rank on different factors", [&] {
    sketch_a<double> s(5, 4, 3);
    s.begin_pass();
    matrix<double> x = test::random_matrix<double>(6, 5, me == R - 1 ? 99 : 98);
    s.add(view(x), matrix_view<const double>());
    s.end_pass();  // locally: each rank's own H_in
    s.begin_pass();
    mpi::end_pass(comm, s);
  }, {last, "different Sketch A factors"});
  expect_all_throw<invalid_argument>("sketch_a: no rank has a pass open", [&] {
    sketch_a<double> s(5, 4, 2);
    mpi::end_pass(comm, s);
  }, {"no pass open", "begin_pass()"});
  expect_all_throw<invalid_argument>("reduce to a root out of range", [&] {
    second_moment<double> a(3);
    mpi::reduce(comm, a, R);
  }, {"argument 'root'", std::to_string(R)});
  // A failed MPI call (under MPI_ERRORS_RETURN) names the call and the rank.
  expect_all_throw<mpi_error>("send to a rank that does not exist", [&] {
    const std::vector<std::byte> b(4);
    comm.send_bytes(b, R + 5, 1);
  }, {"MPI_Send failed on rank " + std::to_string(me)});
}

// --bench N: allreduce of second_moment(N) and sketch_b(N, N) states, and the local accumulate
// rate of sketch_b, for docs/distributed.md.
void bench(const mpi::communicator& comm, yaqa::index n) {
  using clock = std::chrono::steady_clock;
  const auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  const matrix<double> x = test::random_matrix<double>(512, n, 1 + std::uint64_t(comm.rank()));
  const matrix<double> g = test::random_matrix<double>(512, n, 7 + std::uint64_t(comm.rank()));
  sketch_b<double> s(n, n);
  comm.barrier();
  auto t0 = clock::now();
  for (int i = 0; i < 4; ++i) s.add_sequence(view(x), view(g));
  auto t1 = clock::now();
  const double acc_s = secs(t0, t1) / 4;
  comm.barrier();
  t0 = clock::now();
  mpi::allreduce(comm, s);
  t1 = clock::now();
  second_moment<double> a(n);
  a.add(view(x));
  comm.barrier();
  const auto t2 = clock::now();
  mpi::allreduce(comm, a);
  const auto t3 = clock::now();
  if (comm.rank() == 0) {
    const double state = double(n) * double(n + 1) / 2 * 8;
    std::printf("ranks %d n %lld: sketch_b<double> add_sequence (T=512) %.4f s/seq per rank; "
                "allreduce sketch_b (2 x %.1f MB state) %.4f s; allreduce second_moment (%.1f MB) %.4f s\n",
                comm.size(), (long long)n, acc_s, state / 1e6, secs(t0, t1), state / 1e6, secs(t2, t3));
  }
}

// Six layers of different costs m·n·(m+n), so that the split gives every rank of 2 and 3 some
// layers; in multiples of 32 so GGUF block types fit. --bad puts a NaN in blk.4's Hessians: that
// layer goes to a rank other than 0 for 2 and 3 ranks (LPT split, see run.cpp).
// --scale K multiplies every dimension by K (the timings of docs/distributed.md).
int write_model(const std::string& dir, bool bad, yaqa::index scale) {
  struct layer {
    const char* name;
    yaqa::index out, in;
  };
  const layer layers[] = {{"blk.0.weight", 48, 32}, {"blk.1.weight", 32, 64}, {"blk.2.weight", 64, 64},
                          {"blk.3.weight", 96, 32}, {"blk.4.weight", 32, 96}, {"blk.5.weight", 16, 64}};
  safetensors_writer w, h;
  std::uint64_t seed = 100;
  auto second_moment_of = [&](yaqa::index n) {
    const matrix<double> x = test::random_matrix<double>(4 * n, n, seed++);
    matrix<float> a = (x.transpose() * x / double(4 * n)).cast<float>();
    return matrix<float>((a + a.transpose()) * 0.5f);
  };
  for (layer l : layers) {
    l.out *= scale;
    l.in *= scale;
    w.add(l.name, view(test::random_matrix<float>(l.out, l.in, seed++, 0.05)), dtype::f32);
    matrix<float> hin = second_moment_of(l.in), hout = second_moment_of(l.out);
    if (bad && std::string(l.name) == "blk.4.weight") hin(1, 1) = std::numeric_limits<float>::quiet_NaN();
    h.add(std::string(l.name) + ".H", view(hin), dtype::f32);
    h.add(std::string(l.name) + ".H_in", view(hin), dtype::f32);
    h.add(std::string(l.name) + ".H_out", view(hout), dtype::f32);
  }
  w.add("blk.0.bias", {48}, std::vector<float>(48, 0.25f));
  const std::vector<std::int32_t> ids{1, 2, 3};
  w.add("blk.0.ids", dtype::i32, {3}, std::as_bytes(std::span(ids)));
  w.metadata()["format"] = "pt";
  w.write(dir + "/W.safetensors");
  h.write(dir + "/H.safetensors");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--write-model")
    return write_model(argv[2], argc == 4 && std::string(argv[3]) == "--bad",
                       argc == 5 && std::string(argv[3]) == "--scale" ? std::stoll(argv[4]) : 1);
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rc = 0;
  try {
    const mpi::communicator comm(MPI_COMM_WORLD);
    world_rank = comm.rank();
    if (argc == 3 && std::string(argv[1]) == "--bench") {
      bench(comm, std::stoll(argv[2]));
      MPI_Finalize();
      return 0;
    }
    check_second_moment<double>(comm, "double");
    check_diagonal<double>(comm, "double");
    check_sketch_b<double>(comm, "double");
    check_sketch_a<double>(comm, "double");
    check_float_states(comm);
    check_mismatches(comm);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (comm.rank() == 0)
      std::cout << (total == 0 ? "all checks passed" : std::to_string(total) + " check(s) failed") << " on "
                << comm.size() << " ranks" << std::endl;
    rc = total == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "rank " << world_rank << ": unexpected exception: " << e.what() << std::endl;
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Finalize();
  return rc;
}
