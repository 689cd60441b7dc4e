// GPTQ against a naive transcription of the reference algorithm (blocks, lazy group fits from
// the global W, act-order, static groups, dead columns), and the GPTQ == LDLQ(block 1)
// equivalence.
#include <numeric>

#include <catch2/catch.hpp>

#include <rounding/reference_rounding.hpp>
#include <rounding/toy_quantizers.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/rtn.hpp>

using namespace yaqa;

namespace {

// The reference loop, transcribed line by line (torch semantics written with Eigen), in T.
template <class Q>
gptq_result<Q> naive_gptq(const Q& q, matrix<typename Q::scalar_type> W, Eigen::MatrixXd H, yaqa::index blocksize,
                          bool act_order, bool static_groups, double percdamp) {
  using T = typename Q::scalar_type;
  const yaqa::index m = W.rows(), n = W.cols(), gs = q.group_cols(n);
  gptq_result<Q> res;
  for (yaqa::index i = 0; i < n; ++i)
    if (H(i, i) == 0) {
      H(i, i) = 1;
      W.col(i).setZero();
    }
  std::vector<typename Q::params_type> groups, params(static_cast<std::size_t>(n / gs));
  const bool grouped = gs != n;
  if (!grouped || static_groups)
    for (yaqa::index i = 0; i < n; i += gs) groups.push_back(q.fit(view(std::as_const(W)).col_block(i, gs)));
  std::vector<yaqa::index> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](yaqa::index a, yaqa::index b) { return H(a, a) > H(b, b); });
    matrix<T> W2(m, n);
    Eigen::MatrixXd H2(n, n);
    for (yaqa::index j = 0; j < n; ++j) {
      W2.col(j) = W.col(perm[j]);
      for (yaqa::index i = 0; i < n; ++i) H2(i, j) = H(perm[i], perm[j]);
    }
    W = W2;
    H = H2;
  }
  const double damp = percdamp * H.diagonal().mean();
  H.diagonal().array() += damp;
  const Eigen::MatrixXd Hinv_full = H.inverse();
  const Eigen::MatrixXd Uu = Hinv_full.llt().matrixU();  // upper Cholesky of H^{-1}
  const matrix<T> Hinv = Uu.cast<T>();
  matrix<T> Q_(m, n);
  matrix<typename Q::code_type> C(m, n);
  matrix<T> qc(m, 1);
  for (yaqa::index i1 = 0; i1 < n; i1 += blocksize) {
    const yaqa::index i2 = std::min(i1 + blocksize, n), count = i2 - i1;
    matrix<T> W1 = W.middleCols(i1, count);
    matrix<T> Err1(m, count);
    for (yaqa::index i = 0; i < count; ++i) {
      const auto w = W1.col(i).eval();
      const T d = Hinv(i1 + i, i1 + i);
      const typename Q::params_type* p = nullptr;
      if (grouped) {
        if (!static_groups) {
          if ((i1 + i) % gs == 0)
            params[std::size_t((i1 + i) / gs)] = q.fit(view(std::as_const(W)).col_block(i1 + i, gs));
          p = &params[std::size_t((i1 + i) / gs)];
        } else {
          p = &groups[std::size_t(perm[i1 + i] / gs)];
        }
      } else {
        p = &groups[0];
      }
      q.quantize(view(std::as_const(W1)).col_block(i, 1), *p, 0, view(qc), view(C).col_block(i1 + i, 1));
      Q_.col(i1 + i) = qc;
      res.loss += double((w - qc).squaredNorm()) / double(d) / double(d) / 2;
      const auto err1 = ((w - qc) / d).eval();
      for (yaqa::index j = i; j < count; ++j) W1.col(j) -= err1 * Hinv(i1 + i, i1 + j);
      Err1.col(i) = err1;
    }
    for (yaqa::index j = i2; j < n; ++j)
      for (yaqa::index k = 0; k < count; ++k) W.col(j) -= Err1.col(k) * Hinv(i1 + k, j);
  }
  res.weights.resize(m, n);
  res.codes.resize(m, n);
  for (yaqa::index j = 0; j < n; ++j) {
    res.weights.col(perm[j]) = Q_.col(j);
    res.codes.col(perm[j]) = C.col(j);
  }
  res.perm = perm;
  return res;
}

template <class A>
double mismatch(const A& a, const A& b) {
  return double((a.array() != b.array()).count()) / double(a.size());
}

}  // namespace

TEMPLATE_TEST_CASE("GPTQ matches a naive transcription of the reference", "[rounding][gptq]", float, double) {
  using T = TestType;
  struct cfg { yaqa::index m, n, group, block; bool act, stat; };
  for (auto c : {cfg{37, 70, 0, 16, false, false}, cfg{40, 96, 16, 32, false, false}, cfg{40, 96, 16, 20, true, false},
                 cfg{33, 96, 32, 24, true, true}, cfg{50, 130, 0, 128, true, false}}) {
    const matrix<T> w = test::random_weights<T>(c.m, c.n, 40 + c.n);
    Eigen::MatrixXd h = test::random_second_moment<double>(c.n, c.n / 2, 41 + c.n);  // rank-deficient: damping matters
    h.row(5).setZero();  // a dead input
    h.col(5).setZero();
    test::row_scaled_grid<T> q;
    q.group = c.group;
    gptq_options o;
    o.block = c.block;
    o.act_order = c.act;
    o.static_groups = c.stat;
    const matrix<T> ht = h.cast<T>();
    const auto got = gptq(q, view(w), view(ht), o);
    const auto ref = naive_gptq(q, w, ht.template cast<double>(), c.block, c.act, c.stat, o.damping.sigma);
    INFO("m=" << c.m << " n=" << c.n << " group=" << c.group << " block=" << c.block << " act=" << c.act
              << " static=" << c.stat);
    REQUIRE(got.feedback);
    CHECK(got.attempts == 1);
    CHECK(got.dead == std::vector<yaqa::index>{5});
    CHECK((got.weights.col(5).array() == 0).all());
    if constexpr (std::is_same_v<T, double>) {
      CHECK(got.codes == ref.codes);
      CHECK(test::rel_frobenius(got.weights, ref.weights) < 1e-12);
      CHECK(got.loss == Approx(ref.loss).epsilon(1e-9));
    } else {
      CHECK(mismatch(got.codes, ref.codes) < 5e-3);
      CHECK(got.loss == Approx(ref.loss).epsilon(1e-2));
    }
    if (c.act && c.group && !c.stat) {  // g_idx: group of each original column
      REQUIRE(got.group_index.size() == std::size_t(c.n));
      for (yaqa::index p = 0; p < c.n; ++p) CHECK(got.group_index[std::size_t(got.perm[p])] == p / c.group);
    }
  }
}

TEST_CASE("GPTQ equals LDLQ with block size 1 on reversed columns", "[rounding][gptq][ldlq]") {
  // GPTQ walks columns first to last with U = chol_upper((H + damp)^{-1}); LDLQ walks last to
  // first with H = L D L^T. Reversing the column order maps one onto the other.
  const yaqa::index m = 45, n = 77;
  const matrix<double> w = test::random_weights<double>(m, n, 3);
  const Eigen::MatrixXd h = test::random_second_moment<double>(n, 2 * n, 4);
  test::row_scaled_grid<double> q;
  const auto g = gptq(q, view(w), view(h));
  Eigen::MatrixXd hd = h;
  hd.diagonal().array() += g.damp;
  const Eigen::PermutationMatrix<Eigen::Dynamic> J(Eigen::VectorXi::LinSpaced(n, n - 1, 0));
  const matrix<double> wrev = w * J;
  const Eigen::MatrixXd hrev = J.transpose() * hd * J;
  const matrix<double> l = test::naive_block_ldl_L(hrev, 1);
  const auto r = ldlq(q, view(wrev), view(l), 1);
  const matrix<double> back = r.weights * J.transpose();
  CHECK(mismatch(matrix<double>(back), g.weights) == 0.0);
  CHECK(test::rel_frobenius(back, g.weights) < 1e-12);
}

TEST_CASE("GPTQ rounds without feedback, and says so, when every damp fails", "[rounding][gptq]") {
  const matrix<double> w = test::random_weights<double>(8, 12, 1);
  // indefinite with a positive mean diagonal (8.75): -5 needs a damp > 5, the ladder stops at 0.27
  Eigen::MatrixXd h = 10 * Eigen::MatrixXd::Identity(12, 12);
  h(7, 7) = -5;
  test::row_scaled_grid<double> q;
  gptq_options o;
  o.damping.max_steps = 3;
  o.damping.floor_steps = 1;
  const auto g = gptq(q, view(w), view(h), o);
  CHECK_FALSE(g.feedback);
  CHECK_FALSE(g.failure.empty());
  CHECK(g.attempts == 4);
  CHECK(g.weights == rtn(q, view(w)).weights);  // plain rounding with the same parameters
  CHECK(g.weights.allFinite());
}

// gptq_prepare reads H' = H with dead diagonals set to 1, permuted by act-order, straight from h
// (no fp64 or permuted copy) and stores U by lazy batches: both equal, bit for bit, the factor of
// the explicitly formed H', also for an H that is not exactly symmetric (only H' lower counts).
TEMPLATE_TEST_CASE("GPTQ's U, by panels or dense, is the inverse factor of the explicit permuted H", "[rounding][gptq]",
                   float, double) {
  using T = TestType;
  const yaqa::index m = 20, n = 517;
  const matrix<T> w = test::random_weights<T>(m, n, 90);
  matrix<T> h = test::random_second_moment<double>(n, n + 40, 91).cast<T>();
  for (yaqa::index d : {3, 200, 516}) {
    h.row(d).setZero();
    h.col(d).setZero();
  }
  for (yaqa::index j = 0; j < n; ++j)  // not symmetric: the upper triangle is perturbed
    for (yaqa::index i = 0; i < j; ++i) h(i, j) *= T(1.01);
  const int_grid<T> q({.bits = 3});
  for (bool act : {false, true})
    for (yaqa::index block : {128, 50}) {
      INFO("act_order " << act << " block " << block);
      gptq_options o;
      o.act_order = act;
      o.block = block;
      auto dense = yaqa::detail::gptq_prepare("t", cpu_backend{}, q, view(w), view(std::as_const(h)), o);
      auto panels = yaqa::detail::gptq_prepare("t", cpu_backend{2}, q, view(w), view(std::as_const(h)), o, nullptr,
                                               yaqa::detail::gptq_u_layout::panels);
      CHECK(dense.res.dead == std::vector<yaqa::index>{3, 200, 516});
      matrix<T> hp(n, n);  // the reference's H', formed explicitly
      for (yaqa::index j = 0; j < n; ++j)
        for (yaqa::index i = 0; i < n; ++i) {
          const yaqa::index pi = act ? dense.res.perm[std::size_t(i)] : i, pj = act ? dense.res.perm[std::size_t(j)] : j;
          hp(i, j) = (pi == pj && h(pi, pi) == 0) ? T(1) : h(pi, pj);
        }
      const auto f = gptq_inverse_factor(cpu_backend{1}, view(std::as_const(hp)));
      REQUIRE(f.has_value());
      CHECK(dense.res.damp == f->damp);
      CHECK(dense.U == f->U);
      bool same = true;
      for (yaqa::index j = 0; j < n; ++j)
        for (yaqa::index i = 0; i <= j; ++i) same = same && panels.Up(i, j) == f->U(i, j);
      CHECK(same);
      for (yaqa::index i1 = 0; i1 < n; i1 += block) {  // each panel: rows i1.., columns i1..n-1
        const auto& p = panels.Up.at(i1);
        CHECK(p.rows() == std::min(block, n - i1));
        CHECK(p.cols() == n - i1);
        CHECK(p.template triangularView<Eigen::StrictlyLower>().toDenseMatrix().isZero(0));
      }
    }
}
