#pragma once
// Generic property checks shared by the quantizer tests: decode(codes) == recon, idempotence for
// fixed params, row0 addressing of sub-blocks, strided views. Each helper asserts with Catch2.
#include <utility>

#include <catch2/catch.hpp>

#include <yaqa/core/eigen.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa::test {

template <Quantizer Q>
struct quantized {
  matrix<typename Q::scalar_type> recon;
  matrix<typename Q::code_type> codes;
};

//! Quantizes a whole target with fresh output matrices.
template <Quantizer Q>
quantized<Q> run_quantize(const Q& q, const matrix<typename Q::scalar_type>& target,
                          const typename Q::params_type& p, yaqa::index row0 = 0) {
  quantized<Q> r;
  r.recon.resize(target.rows(), target.cols());
  r.codes.resize(target.rows() / Q::unit_rows, target.cols() / Q::unit_cols);
  q.quantize(view(target), p, row0, view(r.recon), view(r.codes));
  return r;
}

//! reconstruct(codes) reproduces quantize's recon bit for bit, and re-quantizing the recon with
//! the same params is a fixed point (same codes, same values).
template <Quantizer Q>
void check_decode_and_idempotence(const Q& q, const matrix<typename Q::scalar_type>& target,
                                  const typename Q::params_type& p, yaqa::index row0 = 0) {
  const auto r = run_quantize(q, target, p, row0);
  const auto dec = q.reconstruct(view(std::as_const(r.codes)), p, row0);
  REQUIRE(dec.rows() == r.recon.rows());
  REQUIRE(dec.cols() == r.recon.cols());
  CHECK(dec == r.recon);
  const auto again = run_quantize(q, r.recon, p, row0);
  CHECK(again.recon == r.recon);
  CHECK(again.codes == r.codes);
}

//! Quantizing rows [r0, r0 + h) x cols [c0, c0 + w) through strided views (row0 = r0) gives the
//! same codes and values as the corresponding block of a whole-matrix call.
template <Quantizer Q>
void check_sub_block(const Q& q, const matrix<typename Q::scalar_type>& target,
                     const typename Q::params_type& p, yaqa::index r0, yaqa::index h, yaqa::index c0,
                     yaqa::index w) {
  using T = typename Q::scalar_type;
  const auto full = run_quantize(q, target, p, 0);
  matrix<T> recon_big = matrix<T>::Constant(target.rows() + 3, target.cols(), T(-7));
  matrix<typename Q::code_type> codes_big(target.rows() + 5, target.cols() / Q::unit_cols + 2);
  codes_big.setZero();
  auto tv = view(target).block(r0, c0, h, w);
  auto rv = view(recon_big).block(r0 + 1, c0, h, w);
  auto cv = view(codes_big).block(r0 / Q::unit_rows + 2, c0 / Q::unit_cols + 1, h / Q::unit_rows,
                                  w / Q::unit_cols);
  q.quantize(tv, p, r0, rv, cv);
  CHECK(Eigen::MatrixXd(as_eigen(rv).template cast<double>()) ==
        Eigen::MatrixXd(full.recon.block(r0, c0, h, w).template cast<double>()));
  CHECK(matrix<typename Q::code_type>(as_eigen(cv)) ==
        full.codes.block(r0 / Q::unit_rows, c0 / Q::unit_cols, h / Q::unit_rows, w / Q::unit_cols));
  CHECK(recon_big(0, c0) == T(-7));  // nothing written outside the block
}

}  // namespace yaqa::test
