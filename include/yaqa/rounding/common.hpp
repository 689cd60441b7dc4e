#pragma once
//! \file
//! Pieces shared by the rounding algorithms: the result type, parameter groups, quantizing a
//! region that may span several groups, and option validation.
#include <algorithm>
#include <type_traits>
#include <string>
#include <vector>

#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/quantizers/concepts.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace yaqa {

template <Quantizer Q>
using scalar_of = typename Q::scalar_type;

//! What every rounding routine returns: the rounded weights in the basis they were given, the
//! codes (one per quantizer unit) and the parameters of each group.
template <Quantizer Q>
struct rounded {
  using scalar_type = typename Q::scalar_type;
  using code_type = typename Q::code_type;
  using params_type = typename Q::params_type;

  matrix<scalar_type> weights;       //!< m x n, the reconstruction (dequantized weights)
  matrix<code_type> codes;           //!< (m / unit_rows) x (n / unit_cols)
  std::vector<params_type> params;   //!< one per parameter group
  //! Group of each column (size n). Empty means column j uses params[j / group_cols].
  //! GPTQ with act-order and lazily fitted groups fills it (GPTQ's g_idx).
  std::vector<index> group_index;

  [[nodiscard]] index group_of(index col, index group_cols) const {
    return group_index.empty() ? col / group_cols : group_index[static_cast<std::size_t>(col)];
  }
};

namespace detail {

inline index round_up_to(index v, index multiple) { return (v + multiple - 1) / multiple * multiple; }

//! Validates the quantizer against an m x n matrix and returns its group width.
template <Quantizer Q>
index checked_group_cols(const char* what, const Q& q, index m, index n) {
  const index g = q.group_cols(n);
  require(g >= 1 && n % g == 0, what, ": the quantizer's group size ", g,
          " must be >= 1 and divide the number of input columns n = ", n);
  require(m % Q::unit_rows == 0, what, ": the quantizer's unit has ", Q::unit_rows,
          " rows, which must divide the number of output rows m = ", m);
  require(g % Q::unit_cols == 0, what, ": the quantizer's group size ", g,
          " must be a multiple of its unit width ", Q::unit_cols);
  return g;
}

//! Throws invalid_argument unless `given` parameter groups were passed for `expected` groups.
inline void check_param_count(const char* what, std::size_t given, index expected) {
  require(static_cast<index>(given) == expected, what, ": got ", given, " parameter groups; expected ",
          expected, " (one per group of input columns)");
}

//! Fits one params per group from w (GPTQ "static groups"): params[k] from columns [k g, (k+1) g),
//! or all at once through q.fit_all(w) for a joint_fit quantizer.
template <Quantizer Q>
std::vector<typename Q::params_type> fit_groups(const Q& q, matrix_view<const scalar_of<Q>> w,
                                                index g) {
  if constexpr (joint_fit<Q>) {
    auto p = q.fit_all(w);
    check_param_count("yaqa: the quantizer's fit_all", p.size(), w.cols / g);
    return p;
  }
  std::vector<typename Q::params_type> p;
  p.reserve(static_cast<std::size_t>(w.cols / g));
  for (index c = 0; c < w.cols; c += g) p.push_back(q.fit(w.col_block(c, g)));
  return p;
}

//! Quantizes `target` (rows x cols, the block of W starting at (row0, col0)), splitting it at
//! group boundaries. Writes recon (same shape as target) and the matching block of `codes`
//! (the whole layer's code matrix).
template <Quantizer Q>
void quantize_region(const Q& q, const rounded<Q>& r, index g, matrix_view<const scalar_of<Q>> target,
                     index row0, index col0, matrix_view<scalar_of<Q>> recon,
                     matrix_view<typename Q::code_type> codes) {
  index c = 0;
  while (c < target.cols) {
    const index col = col0 + c;
    const index grp = r.group_of(col, g);
    // Contiguous columns sharing the group (act-order groups are per column: width 1 run).
    index w = r.group_index.empty() ? std::min(target.cols - c, g - col % g) : 1;
    if (!r.group_index.empty())
      while (c + w < target.cols && r.group_of(col + w, g) == grp) ++w;
    q.quantize(target.col_block(c, w), r.params[static_cast<std::size_t>(grp)], row0,
               recon.col_block(c, w),
               codes.block(row0 / Q::unit_rows, col / Q::unit_cols, target.rows / Q::unit_rows,
                           w / Q::unit_cols));
    c += w;
  }
}

//! Keeps Eigen's own products single-threaded in the calling thread for the lifetime of the
//! guard (Eigen picks blocking sizes from its thread count, which would make results depend on
//! the number of threads). Only this thread's OpenMP ICV is changed; it is restored on exit.
class serial_eigen_scope {
 public:
  serial_eigen_scope() {
#if defined(_OPENMP)
    saved_ = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
  }
  ~serial_eigen_scope() {
#if defined(_OPENMP)
    omp_set_num_threads(saved_);
#endif
  }
  serial_eigen_scope(const serial_eigen_scope&) = delete;
  serial_eigen_scope& operator=(const serial_eigen_scope&) = delete;

 private:
  int saved_ = 1;
};

//! The CPU backend that runs the host-side parts (quantizer calls) for backend b: b itself
//! when it is the CPU backend, else one thread per core as OpenMP sees it.
template <class B>
cpu_backend host_backend(const B& b) {
  if constexpr (requires { b.thread_count(); })
    return cpu_backend{b.thread_count()};
  else
    return cpu_backend{};
}

//! A copy of the backend with its thread count fixed now (before a serial_eigen_scope changes
//! what "the default" means for this thread).
template <class B>
B pin_threads(const B& b) {
  if constexpr (std::is_same_v<B, cpu_backend>)
    return cpu_backend{b.thread_count()};
  else
    return b;
}

//! Allocates the result for an m x n layer and quantizer q.
template <Quantizer Q>
rounded<Q> make_rounded(index m, index n) {
  rounded<Q> r;
  r.weights.setZero(m, n);
  r.codes.resize(m / Q::unit_rows, n / Q::unit_cols);
  return r;
}

}  // namespace detail
}  // namespace yaqa
