#pragma once
//! \file
//! Adam (Kingma & Ba) with PyTorch's defaults (beta1 0.9, beta2 0.999, eps 1e-8, no weight decay:
//! OmniQuant trains LWC/LET, and CQE its increments, with AdamW at weight decay 0 and a constant
//! learning rate). Moments in double; elementwise, so deterministic for any thread count.
#include <cmath>
#include <cstddef>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

struct adam_options {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

//! State of one parameter array of fixed size.
class adam {
 public:
  adam() = default;
  adam(std::size_t size, const adam_options& o = {}) : o_(o), m_(size, 0.0), v_(size, 0.0) {
    detail::require(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps > 0,
                    "yaqa::adam: options need 0 <= beta1, beta2 < 1 and eps > 0, got beta1 = ", o.beta1,
                    ", beta2 = ", o.beta2, ", eps = ", o.eps);
  }
  [[nodiscard]] std::size_t size() const { return m_.size(); }
  [[nodiscard]] long steps() const { return t_; }

  //! theta -= lr * mhat / (sqrt(vhat) + eps) for the gradient g (both of size()).
  template <Scalar T>
  void step(T* theta, const T* g, double lr) {
    ++t_;
    const double c1 = 1.0 - std::pow(o_.beta1, static_cast<double>(t_));
    const double c2 = 1.0 - std::pow(o_.beta2, static_cast<double>(t_));
    for (std::size_t i = 0; i < m_.size(); ++i) {
      const double gi = g[i];
      m_[i] = o_.beta1 * m_[i] + (1.0 - o_.beta1) * gi;
      v_[i] = o_.beta2 * v_[i] + (1.0 - o_.beta2) * gi * gi;
      theta[i] = static_cast<T>(theta[i] - lr * (m_[i] / c1) / (std::sqrt(v_[i] / c2) + o_.eps));
    }
  }

 private:
  adam_options o_;
  std::vector<double> m_, v_;
  long t_ = 0;
};

}  // namespace yaqa
