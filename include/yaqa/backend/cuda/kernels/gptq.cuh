#pragma once
//! \file
//! GPTQ with the int_grid quantizer on the device: yaqa::gptq's contract and result, with the
//! column loop on the GPU. The host does what the CPU does before and after the loop
//! (rounding/gptq.hpp, detail::gptq_prepare / gptq_finish: dead columns, act-order, parameters
//! fitted up front, the inverse factor U in double with the damping ladder, un-permutation);
//! the loop (rounding_plan.hpp, run_gptq) runs per block of `block` columns:
//!   - lazily fitted groups: the group's columns of the current W are downloaded, fitted on the
//!     host with int_grid::fit (the exact CPU parameters), and uploaded (m values each);
//!   - one kernel, one thread per row, runs the block's columns with the CPU's arithmetic
//!     (gptq_row_block: quantize, e = (w - q) / U_cc, unfused rank-1 update of the block);
//!   - one cuBLAS GEMM W[:, i2:] -= Err U[i1:i2, i2:].
//! Rows are independent inside a block, so the kernel has no synchronization; its cost is
//! m * block^2 / 2 updates per block, against the GEMM's 2 m block (n - i2).
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/gptq.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <cstdint>
#include <vector>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/kernels/int_grid.cuh>
#include <yaqa/backend/cuda/kernels/rounding_plan.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/rounding/gptq.hpp>

namespace yaqa::cuda {
namespace detail {

//! Threads per block of the row kernel: small blocks spread a few thousand rows over all SMs.
inline constexpr int gptq_threads = 64;

template <class T>
__global__ void gptq_block_kernel(gptq_buffers<T> bf, grid_args<T> g, index m, index i1, index count, int* bad) {
  for (index r = index(blockIdx.x) * blockDim.x + threadIdx.x; r < m; r += index(gridDim.x) * blockDim.x)
    if (!gptq_row_block(bf, g, r, i1, count)) *bad = 1;
}

//! run_gptq's executor on the device.
template <class T>
struct gptq_device_exec {
  const cuda_backend& b;
  const int_grid<T>& q;
  yaqa::detail::gptq_setup<int_grid<T>>& s;
  device_matrix<T>& w;
  const device_matrix<T>& u;
  device_matrix<T>& err;
  int_grid_device_params<T>& p;
  gptq_buffers<T> bf;
  int* bad;
  const char* what;

  void fit_group(index group, index first_col) {
    const index m = w.rows();
    const matrix<T> cols = to_host(b, w.view().col_block(first_col, s.g));  // synchronizes
    auto& pg = s.params[static_cast<std::size_t>(group)];
    pg = q.fit(view(cols));
    copy_to_device(b, pg.scale.data(), p.scale.data() + group * m, m);  // pg outlives the copy
    copy_to_device(b, pg.zero.data(), p.zero.data() + group * m, m);
  }
  void round_block(index i1, index count) {
    const index m = w.rows();
    gptq_block_kernel<T><<<blocks_for(m, gptq_threads), gptq_threads, 0, b.stream()>>>(
        bf, make_grid_args(q, p), m, i1, count, bad);
    check_launch(what);
  }
  void update(index i1, index count, index i2) {
    const index n = w.cols();
    backend_ops<cuda_backend>::gemm<T>(b, trans::none, trans::none, T(-1), err.cview().col_block(0, count),
                                       u.cview().block(i1, i2, count, n - i2), T(1), w.view().col_block(i2, n - i2));
  }
};

//! The device column loop of a prepared GPTQ problem (s from gptq_prepare; lazily fitted groups
//! are written into s.params). Returns the permuted-order results and the loss.
template <class T>
struct gptq_device_output {
  matrix<T> qm;
  matrix<std::uint8_t> codes;
  double loss = 0;
};

template <Scalar T>
gptq_device_output<T> gptq_device_loop(const cuda_backend& b, const int_grid<T>& q,
                                       yaqa::detail::gptq_setup<int_grid<T>>& s, index block, const char* what) {
  const index m = s.W.rows(), n = s.W.cols();
  const index groups = n / s.g;
  std::vector<index> group_of(static_cast<std::size_t>(n));
  for (index c = 0; c < n; ++c) group_of[static_cast<std::size_t>(c)] = s.group_of(c);

  device_matrix<T> dw = to_device(b, view(std::as_const(s.W)));
  const device_matrix<T> du = to_device(b, view(std::as_const(s.U)));
  device_matrix<T> dq(b, m, n), derr(b, m, std::min(block, n));
  device_matrix<std::uint8_t> dcodes(b, m, n);
  device_buffer<index> dgroup(b, n);
  copy_to_device(b, group_of.data(), dgroup.data(), n);
  device_buffer<double> loss(b, m);
  loss.zero();
  device_buffer<int> bad(b, 1);
  bad.zero();
  int_grid_device_params<T> p;
  if (s.lazy) {  // slots for every group, filled by fit_group
    p = int_grid_device_params<T>{device_buffer<T>(b, m * groups), device_buffer<T>(b, m * groups), m, groups, s.g};
  } else {
    p = upload_params<T>(b, s.params, s.g);
  }
  const detail::gptq_buffers<T> bf{dw.data(), dw.view().ld, du.data(), du.view().ld, dq.data(), dq.view().ld, dcodes.data(),
                                   dcodes.view().ld, derr.data(), derr.view().ld, dgroup.data(), loss.data()};
  detail::gptq_device_exec<T> ex{b, q, s, dw, du, derr, p, bf, bad.data(), what};
  detail::run_gptq(n, block, s.g, s.lazy, ex);

  std::vector<double> row_loss(static_cast<std::size_t>(m));
  gptq_device_output<T> out{to_host(b, dq), to_host(b, dcodes), 0.0};
  int h_bad = 0;
  copy_to_host(b, bad.data(), &h_bad, 1);
  copy_to_host(b, loss.data(), row_loss.data(), m);
  yaqa::detail::require<non_finite_error>(h_bad == 0, what,
                                          ": a rounding target became non-finite (overflow in the feedback)");
  for (double l : row_loss) out.loss += l;
  return out;
}

}  // namespace detail

//! GPTQ on the device for the int_grid quantizer: yaqa::gptq's contract (host inputs, the same
//! gptq_result, the same options and failure behaviour). Codes equal the CPU's except where the
//! block GEMM's summation order (cuBLAS vs Eigen) moves a target across a decision boundary.
//! Throws non_finite_error if a target becomes non-finite. Synchronizes the backend.
template <Scalar T>
gptq_result<int_grid<T>> gptq(const cuda_backend& b, const int_grid<T>& q, matrix_view<const T> w,
                              matrix_view<const T> h, const gptq_options& opt = {}) {
  constexpr const char* what = "yaqa::cuda::gptq";
  auto s = yaqa::detail::gptq_prepare(what, cpu_backend{}, q, w, h, opt);
  const index m = w.rows, n = w.cols;
  if (m == 0 || n == 0) {
    matrix<T> qm(m, n);
    matrix<std::uint8_t> codes(m, n);
    return yaqa::detail::gptq_finish(std::move(s), std::move(qm), std::move(codes));
  }
  auto out = detail::gptq_device_loop<T>(b, q, s, opt.block, what);
  s.res.loss += out.loss;
  return yaqa::detail::gptq_finish(std::move(s), std::move(out.qm), std::move(out.codes));
}

}  // namespace yaqa::cuda
