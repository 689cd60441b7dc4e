#pragma once
//! \file
//! A block-diagonal matrix stored as its diagonal blocks: the D of block LDL. Dense storage of D
//! would cost n^2 entries (6.6 GB in fp64 at n = 28672) for n b non-zeros.
//!
//! Blocks are [0, b), [b, 2b), ...; when b does not divide n the last block is the remainder.
#include <algorithm>
#include <utility>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>

namespace yaqa {

template <Scalar T>
struct block_diagonal {
  index n = 0;                  //!< order of the matrix
  index block = 1;              //!< b: every block is b x b except a smaller last one
  std::vector<matrix<T>> blocks;  //!< the diagonal blocks, top-left first

  block_diagonal() = default;
  block_diagonal(index order, index b, std::vector<matrix<T>> bl) : n(order), block(b), blocks(std::move(bl)) {}

  [[nodiscard]] index rows() const { return n; }
  [[nodiscard]] index cols() const { return n; }
  [[nodiscard]] index block_count() const { return static_cast<index>(blocks.size()); }
  //! First row/column of block k.
  [[nodiscard]] index offset(index k) const { return k * block; }
  [[nodiscard]] const matrix<T>& operator[](index k) const { return blocks[static_cast<std::size_t>(k)]; }

  //! Entry (i, j); zero outside the diagonal blocks.
  [[nodiscard]] T operator()(index i, index j) const {
    const index k = i / block;
    if (j / block != k) return T(0);
    return (*this)[k](i - k * block, j - k * block);
  }
  [[nodiscard]] bool allFinite() const {
    return std::all_of(blocks.begin(), blocks.end(), [](const matrix<T>& b) { return b.allFinite(); });
  }
  //! The n x n dense matrix (tests, small problems).
  [[nodiscard]] matrix<T> dense() const {
    matrix<T> d = matrix<T>::Zero(n, n);
    for (index k = 0; k < block_count(); ++k) d.block(offset(k), offset(k), (*this)[k].rows(), (*this)[k].cols()) = (*this)[k];
    return d;
  }
  friend bool operator==(const block_diagonal& a, const block_diagonal& b) {
    if (a.n != b.n || a.block != b.block || a.blocks.size() != b.blocks.size()) return false;
    for (std::size_t k = 0; k < a.blocks.size(); ++k)
      if (a.blocks[k] != b.blocks[k]) return false;
    return true;
  }
};

}  // namespace yaqa
