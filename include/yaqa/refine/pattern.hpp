#pragma once
//! \file
//! The sparsity pattern of SDE's learnable matrix D (Singular-value Diagonal Expansion, CQE+):
//! W' = W + U D V^T with supp(D) inside the pattern.
//!
//!   diag          D diagonal: LSI (CQE's Learnable Singular-value Increment)     r parameters
//!   band:K        main diagonal plus K super- and K sub-diagonals                (2K+1) r - K(K+1)
//!   topleft:K     dense K x K block of the leading directions, plus the diagonal K^2 + (r - K)
//!   full          every entry                                                    r^2
//!
//! Which pattern the CQE+ paper uses is not public: the pattern is a parameter (docs/refine.md).
#include <charconv>
#include <string>
#include <string_view>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

enum class sde_shape { diag, band, topleft, full };

struct sde_pattern {
  sde_shape shape = sde_shape::diag;
  index k = 0;  //!< band: half-width; topleft: block size; unused otherwise

  friend bool operator==(const sde_pattern&, const sde_pattern&) = default;

  //! True when entry (i, j) of an r x r D is learnable.
  [[nodiscard]] bool contains(index i, index j) const {
    switch (shape) {
      case sde_shape::diag: return i == j;
      case sde_shape::band: return i - j <= k && j - i <= k;
      case sde_shape::topleft: return i == j || (i < k && j < k);
      case sde_shape::full: return true;
    }
    return false;
  }

  //! Number of learnable entries for rank r (after validate(r)).
  [[nodiscard]] index parameter_count(index r) const {
    switch (shape) {
      case sde_shape::diag: return r;
      case sde_shape::band: return (2 * k + 1) * r - k * (k + 1);
      case sde_shape::topleft: return k * k + (r - k);
      case sde_shape::full: return r * r;
    }
    return 0;
  }

  //! Throws invalid_argument (naming the pattern and the rank) unless the pattern fits rank r.
  void validate(index r, const char* what = "yaqa::sde_pattern") const {
    detail::require(r >= 1, what, ": the rank must be >= 1, got ", r);
    if (shape == sde_shape::band)
      detail::require(k >= 0 && k < r, what, ": band:", k, " needs 0 <= K < rank = ", r);
    if (shape == sde_shape::topleft)
      detail::require(k >= 1 && k <= r, what, ": topleft:", k, " needs 1 <= K <= rank = ", r);
  }
};

inline std::string to_string(const sde_pattern& p) {
  switch (p.shape) {
    case sde_shape::diag: return "diag";
    case sde_shape::band: return "band:" + std::to_string(p.k);
    case sde_shape::topleft: return "topleft:" + std::to_string(p.k);
    case sde_shape::full: return "full";
  }
  return "?";
}

//! Parses "diag", "band:K", "topleft:K" or "full" (K a decimal integer; band K >= 0, topleft
//! K >= 1). Throws invalid_argument quoting the text and the accepted forms.
inline sde_pattern parse_sde_pattern(std::string_view s) {
  auto bad = [&](const char* why) {
    return invalid_argument(detail::concat("yaqa::parse_sde_pattern: '", s, "' ", why,
                                           "; expected diag, band:K, topleft:K or full"));
  };
  if (s == "diag") return {sde_shape::diag, 0};
  if (s == "full") return {sde_shape::full, 0};
  if (s == "band" || s == "topleft") throw bad("needs a size (band:K, topleft:K)");
  const auto colon = s.find(':');
  if (colon == std::string_view::npos) throw bad("is not a pattern");
  const std::string_view name = s.substr(0, colon), num = s.substr(colon + 1);
  sde_shape shape;
  if (name == "band") shape = sde_shape::band;
  else if (name == "topleft") shape = sde_shape::topleft;
  else throw bad("names no pattern with a size");
  long long k = -1;
  const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), k);
  if (num.empty() || num.size() > 9 || ec != std::errc{} || end != num.data() + num.size())
    throw bad("has no decimal size K after ':'");
  if (shape == sde_shape::band && k < 0) throw bad("has a negative half-width");
  if (shape == sde_shape::topleft && k < 1) throw bad("needs a block size K >= 1");
  return {shape, static_cast<index>(k)};
}

}  // namespace yaqa
