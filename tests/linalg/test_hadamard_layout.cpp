// The pass decomposition of the random Hadamard transform used by the device
// (linalg/hadamard_layout.hpp, backend/cuda/kernels/hadamard.cuh), run on the host with naive
// loops: per-position factor, Walsh-Hadamard transforms over the layout's Sylvester vectors, and
// a naive strided batched GEMM with cuBLAS's argument meaning, against random_hadamard::apply.
// This checks the index arithmetic the device code uses without a GPU.
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/linalg/hadamard.hpp>
#include <yaqa/linalg/hadamard_layout.hpp>

using namespace yaqa;

namespace {

//! cuBLAS's gemmStridedBatched on host arrays (column-major, op(A) m x k, op(B) k x n, beta = 0),
//! accumulating in T. `writes` counts the stores into every element of c.
template <class T>
void naive_strided_batched_gemm(const detail::rht_gemm& g, const T* a, const T* b, T* c, std::vector<int>& writes) {
  for (yaqa::index bt = 0; bt < g.batch; ++bt) {
    const T* ab = a + bt * g.stride_a;
    const T* bb = b + bt * g.stride_b;
    T* cb = c + bt * g.stride_c;
    for (yaqa::index j = 0; j < g.n; ++j)
      for (yaqa::index i = 0; i < g.m; ++i) {
        T s = 0;
        for (yaqa::index l = 0; l < g.k; ++l) {
          const T av = g.trans_a ? ab[l + i * g.lda] : ab[i + l * g.lda];
          const T bv = g.trans_b ? bb[j + l * g.ldb] : bb[l + j * g.ldb];
          s += av * bv;
        }
        cb[i + j * g.ldc] = s;
        ++writes[static_cast<std::size_t>(cb - c + i + j * g.ldc)];
      }
  }
}

//! The device's passes on the host: x (rows x cols, ld) <- op(U) x or x op(U).
template <class T>
void layout_apply(const random_hadamard& u, side s, trans t, matrix_view<T> x) {
  const yaqa::index kk = u.dense_order(), p = u.sylvester_order();
  const detail::rht_layout l = detail::make_rht_layout(kk, p, s, t, x.rows, x.cols, x.ld);
  const std::vector<T> f = detail::rht_factors<T>(u);
  auto fac = [&](yaqa::index r, yaqa::index c) { return f[static_cast<std::size_t>(l.factor_on_rows ? r : c)]; };

  // pass 1: backward scales first
  if (!l.forward)
    for (yaqa::index c = 0; c < x.cols; ++c)
      for (yaqa::index r = 0; r < x.rows; ++r) x.data[r + c * x.ld] *= fac(r, c);

  // pass 2: radix-2 Walsh-Hadamard over every Sylvester vector; each element of x visited once
  std::vector<int> seen(static_cast<std::size_t>(x.ld * x.cols), 0);
  const detail::vector_family& v = l.sylvester;
  REQUIRE((p == 1 ? v.count == 0 : (v.count * v.len == x.rows * x.cols && v.len == p)));
  for (yaqa::index q = 0; q < v.count; ++q) {
    for (yaqa::index i = 0; i < v.len; ++i) ++seen[static_cast<std::size_t>(v.at(q, i))];
    for (yaqa::index h = 1; h < v.len; h *= 2)
      for (yaqa::index s0 = 0; s0 < v.len; s0 += 2 * h)
        for (yaqa::index i = s0; i < s0 + h; ++i) {
          T& a = x.data[v.at(q, i)];
          T& b = x.data[v.at(q, i + h)];
          const T av = a, bv = b;
          a = av + bv;
          b = av - bv;
        }
  }
  if (p > 1)
    for (yaqa::index c = 0; c < x.cols; ++c)
      for (yaqa::index r = 0; r < x.ld; ++r)
        REQUIRE(seen[static_cast<std::size_t>(r + c * x.ld)] == (r < x.rows ? 1 : 0));

  // pass 3: the GEMM into a rows x cols scratch (ld rows); every scratch element written once
  const detail::rht_gemm& g = l.dense;
  const matrix<T>& dense = u.dense_factor<T>();
  const yaqa::index am = g.trans_a ? g.k : g.m, bk = g.trans_b ? g.n : g.k;  // stored rows of A and B
  REQUIRE(g.lda >= std::max<yaqa::index>(1, am));                             // cuBLAS's requirements
  REQUIRE(g.ldb >= std::max<yaqa::index>(1, bk));
  REQUIRE(g.ldc >= std::max<yaqa::index>(1, g.m));
  REQUIRE(g.batch >= 1);
  std::vector<T> scratch(static_cast<std::size_t>(x.rows * x.cols), T(0));
  std::vector<int> writes(scratch.size(), 0);
  const T* a = g.a_is_dense ? dense.data() : x.data;
  const T* b = g.a_is_dense ? x.data : dense.data();
  naive_strided_batched_gemm(g, a, b, scratch.data(), writes);
  for (int w : writes) REQUIRE(w == 1);

  // pass 4: copy back, forward scales last
  for (yaqa::index c = 0; c < x.cols; ++c)
    for (yaqa::index r = 0; r < x.rows; ++r) {
      const T y = scratch[static_cast<std::size_t>(r + c * x.rows)];
      x.data[r + c * x.ld] = l.forward ? y * fac(r, c) : y;
    }
}

}  // namespace

TEMPLATE_TEST_CASE("the device pass layout of random_hadamard matches apply at every kind of order",
                   "[linalg][hadamard]", float, double) {
  using T = TestType;
  struct order {
    yaqa::index n;
    const char* description;
  };
  for (const order& o : std::vector<order>{{64, "sylvester(64)"},
                                           {12, "hadamard(12)"},
                                           {28, "hadamard(28)"},
                                           {640, "hadamard(20) x sylvester(32)"},
                                           {768, "hadamard(12) x sylvester(64)"},
                                           {92, "orthogonal(23) x sylvester(4)"},
                                           {368, "orthogonal(23) x sylvester(16)"},
                                           {42, "orthogonal(21) x sylvester(2)"},
                                           {257, "orthogonal(257)"},
                                           {2752, "orthogonal(43) x sylvester(64)"}}) {
    const random_hadamard u(o.n, 7 + std::uint64_t(o.n));
    REQUIRE(u.description() == o.description);
    for (int s = 0; s < 2; ++s)
      for (int t = 0; t < 2; ++t)
        for (yaqa::index pad : {0, 3}) {  // pad 0: ld == rows (one GEMM on the right); 3: strided view
          const side sd = s ? side::right : side::left;
          const trans tr = t ? trans::transpose : trans::none;
          const yaqa::index other = 13;  // not a multiple of 8
          const yaqa::index rows = s ? other : o.n, cols = s ? o.n : other;
          const matrix<T> big = test::random_matrix<T>(rows + pad, cols, 90 + std::uint64_t(o.n));
          matrix<T> ref = big, got = big;
          u.apply<T>(sd, tr, view(ref).block(pad > 0 ? 1 : 0, 0, rows, cols));
          layout_apply<T>(u, sd, tr, view(got).block(pad > 0 ? 1 : 0, 0, rows, cols));
          INFO(o.description << " side=" << s << " trans=" << t << " pad=" << pad);
          REQUIRE_THAT(Eigen::MatrixXd(got.template cast<double>()), test::IsClose(ref, sizeof(T) == 4 ? 1e-6 : 1e-14));
          if (pad > 0) {  // rows outside the view untouched
            CHECK(got.row(0) == big.row(0));
            CHECK(got.row(rows + pad - 1) == big.row(rows + pad - 1));
          }
        }
  }
}

TEST_CASE("make_rht_layout: strides of the Sylvester vectors and of the dense GEMM", "[linalg][hadamard]") {
  // right side, 5 x 768 in a ld = 8 view: K = 12, P = 64
  detail::rht_layout l = detail::make_rht_layout(12, 64, side::right, trans::none, 5, 768, 8);
  CHECK_FALSE(l.forward);  // x U is the backward transform per row
  CHECK_FALSE(l.factor_on_rows);
  CHECK(l.sylvester.count == 60);
  CHECK(l.sylvester.at(7, 3) == 2 + 1 * 64 * 8 + 3 * 8);  // row 2, k = 1, j = 3
  CHECK(l.dense.batch == 64);
  CHECK_FALSE(l.dense.trans_b);  // backward: X G
  // contiguous: one GEMM over rows x P by K
  l = detail::make_rht_layout(12, 64, side::right, trans::transpose, 5, 768, 5);
  CHECK(l.forward);
  CHECK(l.dense.batch == 1);
  CHECK(l.dense.m == 320);
  CHECK(l.dense.trans_b);  // forward: X G^T
  // left side with P = 1: G on the left of x
  l = detail::make_rht_layout(257, 1, side::left, trans::none, 257, 9, 260);
  CHECK(l.dense.a_is_dense);
  CHECK(l.sylvester.count == 0);
  CHECK(l.dense.ldb == 260);
}
