#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include <support/generators.hpp>
#include <yaqa/hessian/state.hpp>

using namespace yaqa;

namespace {
bool same_bits(const matrix<double>& a, const matrix<double>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && a == b;
}
}  // namespace

TEST_CASE("save_state / load_state restore every accumulator exactly", "[hessian][state]") {
  const yaqa::index n = 13, m = 7;
  const matrix<double> x = test::random_matrix<double>(19, n, 1, 1.0);
  const matrix<double> g = test::random_matrix<double>(19, m, 2, 1.0);

  second_moment<double> sm(n);
  sm.add(view(x));
  second_moment<double> sm2(n);
  load_state(sm2, save_state(sm));
  CHECK(same_bits(sm2.sum(), sm.sum()));
  CHECK(sm2.count() == sm.count());
  CHECK(sm2.batches() == sm.batches());

  diagonal_second_moment<double> dg(n), dg2(n);
  dg.add(view(x));
  load_state(dg2, save_state(dg));
  CHECK(dg2.sum() == dg.sum());

  sketch_b<double> sb(n, m), sb2(n, m);
  sb.add_sequence(view(x), view(g));
  load_state(sb2, save_state(sb));
  CHECK(same_bits(sb2.h_in(), sb.h_in()));
  CHECK(same_bits(sb2.h_out(), sb.h_out()));
  CHECK(sb2.tokens() == sb.tokens());

  // Sketch A from every state: before the first pass, inside a pass, between passes.
  sketch_a<double> sa(n, m, 3);
  for (int p = 0; p < 3; ++p) {
    sketch_a<double> before(n, m, 3);
    load_state(before, save_state(sa));
    CHECK(before.pass() == p);
    sa.begin_pass();
    before.begin_pass();
    sa.add(view(x).block(0, 0, 8, n), view(g).block(0, 0, 8, m));
    sketch_a<double> inside(n, m, 3);
    load_state(inside, save_state(sa));
    CHECK(inside.in_pass());
    CHECK(inside.pass_count() == 8);
    before.add(view(x).block(0, 0, 8, n), view(g).block(0, 0, 8, m));
    for (auto* s : {&sa, &inside, &before}) s->add(view(x).block(8, 0, 11, n), view(g).block(8, 0, 11, m));
    for (auto* s : {&sa, &inside, &before}) s->end_pass();
    CHECK(same_bits(inside.h_in(), sa.h_in()));
    CHECK(same_bits(before.h_in(), sa.h_in()));
    if (p > 0) {
      CHECK(same_bits(inside.h_out(), sa.h_out()));
      CHECK(same_bits(before.h_out(), sa.h_out()));
    }
  }
  sketch_a<double> done(n, m, 3);
  load_state(done, save_state(sa));
  CHECK(done.done());
}

TEST_CASE("load_state refuses other shapes, kinds and truncated bytes", "[hessian][state]") {
  second_moment<double> sm(5);
  sm.add(view(test::random_matrix<double>(3, 5, 4, 1.0)));
  const std::vector<std::byte> bytes = save_state(sm);
  second_moment<double> other(6);
  CHECK_THROWS_AS(load_state(other, bytes), invalid_argument);
  second_moment<float> single(5);
  CHECK_THROWS_AS(load_state(single, bytes), invalid_argument);
  diagonal_second_moment<double> dg(5);
  CHECK_THROWS_WITH(load_state(dg, bytes), Catch::Contains("second_moment state"));
  second_moment<double> same(5);
  CHECK_THROWS_AS(load_state(same, std::span(bytes).first(bytes.size() - 1)), invalid_argument);
  std::vector<std::byte> longer = bytes;
  longer.push_back(std::byte{0});
  CHECK_THROWS_AS(load_state(same, longer), invalid_argument);
}
