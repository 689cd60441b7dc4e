#pragma once
//! \file
//! The trellis quantizer on the device: tail-biting Viterbi over batches of 16 x 16 tiles, and
//! decoding. The algorithm (bodies and the launch sequence) is trellis_math.hpp, shared with a
//! CPU test that runs it on the host; this file holds the grid-stride kernels around the bodies,
//! the executor that maps each driver call onto one launch, and the host entry points
//! yaqa::cuda::quantize / reconstruct for trellis<T>.
//!
//! Memory: each tile of a batch needs 2^(L+1) costs, (256 / V) 2^(L-KV) one-byte back pointers
//! and a few kilobytes more (trellis_tile_scratch: about 4.7 MB at L = 16, K = 2, V = 1 in
//! float, 1.0 MB with V = 2); batches are sized to `batch_bytes` (default 1 GiB). The per-row
//! factors (reciprocal, amplitude, scale: trellis_row_factors) take 3 values per target row.
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/trellis.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <cstdint>
#include <vector>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/kernels/trellis_math.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/quantizers/trellis.hpp>

namespace yaqa::cuda {

//! A trellis quantizer's tables in device memory: the value tables the Viterbi reads (2^L
//! values, twice for V = 2) and HYB's LUT (decoding). Move-only, like the buffers.
template <Scalar T>
struct trellis_device_tables {
  device_buffer<T> v0, v1, lut;
  detail::trellis_args<T> args{};  //!< geometry and code, pointing at the buffers above
};

//! Uploads q's tables (once per quantizer; synchronizes).
template <Scalar T>
trellis_device_tables<T> upload_tables(const cuda_backend& b, const trellis<T>& q) {
  const auto& tb = q.table();
  const auto& g = q.geometry();
  trellis_device_tables<T> d;
  d.v0 = device_buffer<T>(b, static_cast<index>(tb.v0.size()));
  d.v1 = device_buffer<T>(b, static_cast<index>(tb.v1.size()));
  d.lut = device_buffer<T>(b, static_cast<index>(tb.lut.size()));
  copy_to_device(b, tb.v0.data(), d.v0.data(), d.v0.size());
  copy_to_device(b, tb.v1.data(), d.v1.data(), d.v1.size());
  copy_to_device(b, tb.lut.data(), d.lut.data(), d.lut.size());
  d.args = {g.l,       g.k,
            g.v,       g.kv,
            g.steps,   q.code(),
            d.v0.data(), tb.v1.empty() ? nullptr : d.v1.data(),
            tb.lut.empty() ? nullptr : d.lut.data()};
  b.synchronize();
  return d;
}

namespace detail {

//! rows: the per-row factors of the target (trellis_row_factors: reciprocals, then amplitudes).
template <class T>
__global__ void trellis_load_kernel(trellis_args<T> a, device_view<const T> target, index tile_rows, index tile0,
                                    index nt, const T* rows, T* u, T* amp, int* bad) {
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < nt * trellis_tile_weights;
       i += index(gridDim.x) * blockDim.x) {
    bool ok = true;
    const index tile = tile0 + i / trellis_tile_weights;
    const int e = static_cast<int>(i % trellis_tile_weights);
    u[i] = trellis_load(target.data, target.ld, tile_rows, tile, e, rows, ok);
    amp[i] = rows[target.rows + trellis_row(tile_rows, tile, e)];
    if (!ok) *bad = 1;
  }
}

template <class T>
__global__ void trellis_start_kernel(trellis_args<T> a, index nt, int pass, const T* u, const T* amp,
                                     const std::int64_t* overlap, T* cost) {
  const index S = a.states();
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < nt * S; i += index(gridDim.x) * blockDim.x) {
    const index tile = i / S;
    const T* ut = u + tile * trellis_tile_weights;
    const T* at = amp + tile * trellis_tile_weights;
    T x0, a0, x1 = T(0), a1 = T(0);
    trellis_step_target(ut, at, a.steps, a.v, pass, 0, 0, x0, a0);
    if (a.v == 2) trellis_step_target(ut, at, a.steps, a.v, pass, 0, 1, x1, a1);
    cost[i] = trellis_start(a, i % S, x0, x1, a0, a1, pass == 0 ? std::int64_t{-1} : overlap[tile]);
  }
}

template <class T>
__global__ void trellis_step_kernel(trellis_args<T> a, index nt, int pass, int t, const T* u, const T* amp,
                                    const T* cur, T* nxt, std::uint8_t* bp) {
  const index S = a.states(), G = a.groups();
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < nt * G; i += index(gridDim.x) * blockDim.x) {
    const index tile = i / G;
    const T* ut = u + tile * trellis_tile_weights;
    const T* at = amp + tile * trellis_tile_weights;
    T x0, a0, x1 = T(0), a1 = T(0);
    trellis_step_target(ut, at, a.steps, a.v, pass, t, 0, x0, a0);
    if (a.v == 2) trellis_step_target(ut, at, a.steps, a.v, pass, t, 1, x1, a1);
    trellis_group(a, cur + tile * S, nxt + tile * S, bp + (tile * a.steps + t) * G, i % G, x0, x1, a0, a1);
  }
}

template <class T>
__global__ void trellis_finish_kernel(trellis_args<T> a, index nt, int pass, const T* cost, const std::uint8_t* bp,
                                      std::int64_t* overlap, std::uint32_t* states) {
  const index S = a.states(), G = a.groups();
  for (index tile = index(blockIdx.x) * blockDim.x + threadIdx.x; tile < nt; tile += index(gridDim.x) * blockDim.x) {
    std::uint32_t* st = states + tile * a.steps;
    trellis_finish(a, cost + tile * S, bp + tile * a.steps * G, pass == 0 ? std::int64_t{-1} : overlap[tile], st);
    if (pass == 0) overlap[tile] = trellis_overlap(a, st);
  }
}

template <class T>
__global__ void trellis_pack_kernel(trellis_args<T> a, index nt, index tile_rows, index tile0,
                                    const std::uint32_t* states, device_view<trellis_bits> codes) {
  constexpr int cw = trellis_bits::capacity_words;
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < nt * cw; i += index(gridDim.x) * blockDim.x) {
    const index tile = i / cw, g = tile0 + tile;
    const int w = static_cast<int>(i % cw);
    codes.data[g % tile_rows + (g / tile_rows) * codes.ld].words[static_cast<std::size_t>(w)] =
        w < a.words() ? trellis_word(a, states + tile * a.steps, w) : 0u;
  }
}

//! scale: one per row of the reconstruction.
template <class T>
__global__ void trellis_recon_kernel(trellis_args<T> a, index nt, index tile_rows, index tile0,
                                     const std::uint32_t* states, const T* scale, device_view<T> recon) {
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < nt * trellis_tile_weights;
       i += index(gridDim.x) * blockDim.x) {
    const index tile = i / trellis_tile_weights, g = tile0 + tile;
    const int e = static_cast<int>(i % trellis_tile_weights), j = e % a.v;
    const std::uint32_t s = states[tile * a.steps + e / a.v];
    const index row = trellis_row(tile_rows, g, e), col = 16 * (g / tile_rows) + e % 16;
    recon.data[row + col * recon.ld] = mul_rn(scale[row], j == 0 ? a.v0[s] : a.v1[s]);
  }
}

//! scale: one per row of out.
template <class T>
__global__ void trellis_decode_kernel(trellis_args<T> a, device_view<const trellis_bits> codes, const T* scale,
                                      device_view<T> out) {
  for (index i = index(blockIdx.x) * blockDim.x + threadIdx.x; i < out.rows * out.cols;
       i += index(gridDim.x) * blockDim.x) {
    const index row = i % out.rows, col = i / out.rows;
    const trellis_bits& b = codes.data[row / 16 + (col / 16) * codes.ld];
    out.data[row + col * out.ld] =
        trellis_decode(a, b.words.data(), scale[row], static_cast<int>(16 * (row % 16) + col % 16));
  }
}

//! run_trellis_batch's executor on the device: one launch per call, on the backend's stream.
template <class T>
struct trellis_device_exec {
  const cuda_backend& b;
  trellis_args<T> a;
  device_view<const T> target;
  device_view<T> out;  // the reconstruction
  device_view<trellis_bits> codes;
  index tile_rows = 0, tile0 = 0, nt = 0;
  const T* rows = nullptr;  // trellis_row_factors of the target: reciprocals, amplitudes, scales
  T* u = nullptr;
  T* amp = nullptr;
  T* cur = nullptr;  // swapped after every step
  T* nxt = nullptr;
  std::uint8_t* bp = nullptr;
  std::uint32_t* states = nullptr;
  std::int64_t* overlap = nullptr;
  int* bad = nullptr;
  const char* what = "";
  T* cost0 = nullptr;  // the two cost buffers
  T* cost1 = nullptr;

  void begin(index first, index count) {
    tile0 = first;
    nt = count;
    cur = cost0;
    nxt = cost1;
  }
  void load() {
    trellis_load_kernel<<<blocks_for(nt * trellis_tile_weights), threads_per_block, 0, b.stream()>>>(
        a, target, tile_rows, tile0, nt, rows, u, amp, bad);
    check_launch(what);
  }
  void start(int pass) {
    trellis_start_kernel<<<blocks_for(nt * a.states()), threads_per_block, 0, b.stream()>>>(a, nt, pass, u, amp,
                                                                                           overlap, cur);
    check_launch(what);
  }
  void step(int pass, int t) {
    trellis_step_kernel<<<blocks_for(nt * a.groups()), threads_per_block, 0, b.stream()>>>(a, nt, pass, t, u, amp,
                                                                                          cur, nxt, bp);
    check_launch(what);
    std::swap(cur, nxt);
  }
  void finish(int pass) {
    trellis_finish_kernel<<<blocks_for(nt), threads_per_block, 0, b.stream()>>>(a, nt, pass, cur, bp, overlap,
                                                                               states);
    check_launch(what);
  }
  void pack() {
    trellis_pack_kernel<<<blocks_for(nt * trellis_bits::capacity_words), threads_per_block, 0, b.stream()>>>(
        a, nt, tile_rows, tile0, states, codes);
    check_launch(what);
  }
  void recon() {
    trellis_recon_kernel<<<blocks_for(nt * trellis_tile_weights), threads_per_block, 0, b.stream()>>>(
        a, nt, tile_rows, tile0, states, rows + 2 * target.rows, out);
    check_launch(what);
  }
};

}  // namespace detail

//! trellis<T>::quantize on the device: target, recon (rows x cols, multiples of 16) and codes
//! ((rows / 16) x (cols / 16) streams) in device memory, p the scales fitted on the host (q.fit
//! on this target: one per row, row0 = 0). The same walks as the CPU up to ties within rounding
//! (see trellis_math.hpp). Throws shape_error for bad shapes and non_finite_error when the target
//! holds NaN/Inf (the outputs are then unspecified). Synchronizes the backend.
template <Scalar T>
void quantize(const cuda_backend& b, const trellis<T>& q, const trellis_device_tables<T>& dt,
              const typename trellis<T>::params_type& p, device_view<const T> target, device_view<T> recon,
              device_view<trellis_bits> codes, index batch_bytes = index(1) << 30) {
  constexpr const char* what = "yaqa::cuda::quantize (trellis)";
  yaqa::detail::require<shape_error>(target.rows % 16 == 0 && target.cols % 16 == 0, what, ": argument 'target' is ",
                                     target.rows, "x", target.cols, "; expected rows and cols multiples of 16");
  check_shape(what, "recon", recon, target.rows, target.cols);
  check_shape(what, "codes", codes, target.rows / 16, target.cols / 16);
  yaqa::detail::require<shape_error>(p.rows() == target.rows, what, ": argument 'p' holds ", p.rows(),
                                     " row scales; expected one per target row (", target.rows, ")");
  const auto& g = q.geometry();
  yaqa::detail::require(dt.args.l == g.l && dt.args.k == g.k && dt.args.v == g.v && dt.args.code == q.code(), what,
                        ": argument 'tables' was uploaded for another configuration (L, K, V, code)");
  if (target.empty()) return;
  const detail::trellis_args<T> a = dt.args;
  const index tile_rows = target.rows / 16, total = tile_rows * (target.cols / 16);
  const index batch = detail::trellis_batch_tiles(a, total, batch_bytes);
  device_buffer<T> u(b, batch * trellis_tile_weights), amp(b, batch * trellis_tile_weights),
      c0(b, batch * a.states()), c1(b, batch * a.states());
  device_buffer<std::uint8_t> bp(b, batch * a.steps * a.groups());
  device_buffer<std::uint32_t> states(b, batch * a.steps);
  device_buffer<std::int64_t> overlap(b, batch);
  device_buffer<int> bad(b, 1);
  bad.zero();
  // the CPU's reciprocals and amplitudes, computed on the host
  const std::vector<T> f = detail::trellis_row_factors(p.scale.data(), target.rows);
  device_buffer<T> rows(b, static_cast<index>(f.size()));
  copy_to_device(b, f.data(), rows.data(), rows.size());
  detail::trellis_device_exec<T> ex{b, a, target, recon, codes};
  ex.tile_rows = tile_rows;
  ex.rows = rows.data();
  ex.u = u.data();
  ex.amp = amp.data();
  ex.cost0 = c0.data();
  ex.cost1 = c1.data();
  ex.bp = bp.data();
  ex.states = states.data();
  ex.overlap = overlap.data();
  ex.bad = bad.data();
  ex.what = what;
  detail::run_trellis(a.steps, total, batch, ex);
  int h_bad = 0;
  copy_to_host(b, bad.data(), &h_bad, 1);  // synchronizes
  yaqa::detail::require<non_finite_error>(h_bad == 0, what,
                                          ": argument 'target' contains a non-finite value; expected finite values");
}

//! trellis<T>::reconstruct on the device: out (16 codes.rows x 16 codes.cols) = the row's scale
//! (p: one per row of out, row0 = 0) * the values of the streams' states, computed from the
//! code's recipe (no value table).
template <Scalar T>
void reconstruct(const cuda_backend& b, const trellis<T>& q, const trellis_device_tables<T>& dt,
                 const typename trellis<T>::params_type& p, device_view<const trellis_bits> codes,
                 device_view<T> out) {
  constexpr const char* what = "yaqa::cuda::reconstruct (trellis)";
  check_shape(what, "out", out, codes.rows * 16, codes.cols * 16);
  yaqa::detail::require(dt.args.l == q.l() && dt.args.k == q.k() && dt.args.code == q.code(), what,
                        ": argument 'tables' was uploaded for another configuration (L, K, V, code)");
  yaqa::detail::require<shape_error>(p.rows() == out.rows, what, ": argument 'p' holds ", p.rows(),
                                     " row scales; expected one per row of 'out' (", out.rows, ")");
  if (out.empty()) return;
  device_buffer<T> scale(b, p.rows());
  copy_to_device(b, p.scale.data(), scale.data(), scale.size());
  detail::trellis_decode_kernel<T><<<detail::blocks_for(out.rows * out.cols), detail::threads_per_block, 0,
                                     b.stream()>>>(dt.args, codes, scale.data(), out);
  detail::check_launch(what);  // the buffer's stream-ordered free follows the kernel
}

}  // namespace yaqa::cuda
