#pragma once
//! \file
//! Adam training of tiny_lm on the train segments, and the weight cache.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <yaqa/core/error.hpp>

#include "corpus.hpp"
#include "model.hpp"
#include "progress.hpp"

namespace tiny_lm {

struct train_config {
  index steps = 3000;
  index batch = 256;       //!< positions per step
  double lr = 3e-3;        //!< peak learning rate
  index warmup = 100;      //!< linear warm-up steps, then cosine decay to lr / 10
  double beta1 = 0.9, beta2 = 0.99, eps = 1e-8;
  double clip = 1.0;       //!< global gradient-norm clip
  std::uint64_t seed = 1;
};

//! Learning rate at step t (0-based).
inline double learning_rate(const train_config& tc, index t) {
  if (t < tc.warmup) return tc.lr * double(t + 1) / double(tc.warmup);
  const double x = double(t - tc.warmup) / double(std::max<index>(1, tc.steps - tc.warmup));
  return tc.lr * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(3.141592653589793 * std::min(1.0, x))));
}

//! Adam with bias correction over every tensor of params.
class adam {
 public:
  adam(const model_config& cfg, const train_config& tc)
      : m_(zeros_like(cfg)), v_(zeros_like(cfg)), tc_(tc) {}

  //! p -= lr * mhat / (sqrt(vhat) + eps), after clipping g to global norm tc.clip.
  void step(params& p, params& g, double lr) {
    ++t_;
    double sq = 0;
    for_each_tensor(g, [&](const float* d, index n) {
      for (index i = 0; i < n; ++i) sq += double(d[i]) * d[i];
    });
    const double norm = std::sqrt(sq);
    const float scale = norm > tc_.clip ? float(tc_.clip / norm) : 1.f;
    const float b1 = float(tc_.beta1), b2 = float(tc_.beta2);
    const float c1 = float(1.0 - std::pow(tc_.beta1, double(t_)));
    const float c2 = float(1.0 - std::pow(tc_.beta2, double(t_)));
    const float step = float(lr), eps = float(tc_.eps);
    // The four structures list their tensors in the same order: walk them together.
    std::vector<float*> ps, gs, ms, vs;
    std::vector<index> ns;
    for_each_tensor(p, [&](float* d, index n) { ps.push_back(d); ns.push_back(n); });
    for_each_tensor(g, [&](float* d, index) { gs.push_back(d); });
    for_each_tensor(m_, [&](float* d, index) { ms.push_back(d); });
    for_each_tensor(v_, [&](float* d, index) { vs.push_back(d); });
    for (std::size_t k = 0; k < ps.size(); ++k) {
      Eigen::Map<Eigen::ArrayXf> pk(ps[k], ns[k]), mk(ms[k], ns[k]), vk(vs[k], ns[k]);
      const Eigen::Map<const Eigen::ArrayXf> gk(gs[k], ns[k]);
      mk = b1 * mk + ((1 - b1) * scale) * gk;
      vk = b2 * vk + ((1 - b2) * scale * scale) * gk.square();
      pk -= (step / c1) * mk / ((vk / c2).sqrt() + eps);
    }
    last_norm_ = norm;
  }
  [[nodiscard]] double last_grad_norm() const { return last_norm_; }

 private:
  params m_, v_;
  train_config tc_;
  index t_ = 0;
  double last_norm_ = 0;
};

inline void set_zero(params& g) {
  for_each_tensor(g, [](float* d, index n) { std::fill(d, d + n, 0.f); });
}

//! Trains from init_params(cfg, tc.seed) on uniformly sampled train positions.
//! Returns the trained parameters; reports the running loss through a progress stage.
inline params train(const yaqa::cpu_backend& be, const corpus& c, const model_config& cfg,
                    const train_config& tc, clock_type::time_point t0, bool quiet = false) {
  params p = init_params(cfg, tc.seed);
  params g = zeros_like(cfg);
  adam opt(cfg, tc);
  const position_set train_pos = position_set::of(c.train);
  std::mt19937_64 rng(tc.seed ^ 0x5eedull);
  std::uniform_int_distribution<index> pick(0, train_pos.size() - 1);
  std::vector<index> pos(std::size_t(tc.batch)), seg(std::size_t(tc.batch));
  batch b;
  forward_cache fc;
  mat dlogits;
  progress pr("train", tc.steps, t0, quiet);
  double avg = 0;
  for (index t = 0; t < tc.steps; ++t) {
    for (index i = 0; i < tc.batch; ++i) {
      const index k = pick(rng);
      pos[std::size_t(i)] = train_pos.pos[std::size_t(k)];
      seg[std::size_t(i)] = train_pos.seg_of[std::size_t(k)];
    }
    make_batch(c.text, pos, c.train, seg, cfg.context, b);
    forward(be, p, b, cfg.context, fc);
    const double loss = cross_entropy(fc.logits, b.target, &dlogits);
    set_zero(g);
    backward(be, p, b, cfg.context, fc, dlogits, &g);
    opt.step(p, g, learning_rate(tc, t));
    avg = t == 0 ? loss : 0.98 * avg + 0.02 * loss;
    pr.update(t + 1, yaqa::detail::concat("loss ", std::round(avg * 1000) / 1000, " nats (",
                                          std::round(avg / std::log(2.0) * 1000) / 1000,
                                          " bits/byte), ",
                                          int(double((t + 1) * tc.batch) / pr.elapsed()),
                                          " bytes/s"));
  }
  return p;
}

// ---- cache ----------------------------------------------------------------------------------

inline constexpr char cache_magic[8] = {'T', 'I', 'N', 'Y', 'L', 'M', '0', '1'};

//! Key of a trained model: the corpus text, both configurations and the format version.
inline std::uint64_t cache_key(const corpus& c, const model_config& mc, const train_config& tc) {
  std::uint64_t h = fnv1a(c.text.data(), c.text.size());
  const std::string s = yaqa::detail::concat(mc.describe(), "|", tc.steps, ",", tc.batch, ",",
                                             tc.lr, ",", tc.warmup, ",", tc.beta1, ",", tc.beta2,
                                             ",", tc.clip, ",", tc.seed, "|",
                                             c.train.size(), ",", c.heldout.size());
  h = fnv1a(s.data(), s.size(), h);
  return fnv1a(cache_magic, sizeof cache_magic, h);
}

inline void save_params(const std::filesystem::path& path, const params& p, std::uint64_t key) {
  std::filesystem::create_directories(path.parent_path());
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    yaqa::detail::require<yaqa::io_error>(bool(f), "tiny_lm::save_params: cannot write '", tmp, "'");
    f.write(cache_magic, sizeof cache_magic);
    f.write(reinterpret_cast<const char*>(&key), sizeof key);
    for_each_tensor(p, [&](const float* d, index n) {
      f.write(reinterpret_cast<const char*>(d), std::streamsize(n * index(sizeof(float))));
    });
    yaqa::detail::require<yaqa::io_error>(bool(f), "tiny_lm::save_params: short write to '", tmp, "'");
  }
  std::filesystem::rename(tmp, path);
}

//! Loads cached parameters shaped for cfg; false when the file is missing or its key differs.
inline bool load_params(const std::filesystem::path& path, const model_config& cfg,
                        std::uint64_t key, params& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char magic[sizeof cache_magic];
  std::uint64_t k = 0;
  f.read(magic, sizeof magic);
  f.read(reinterpret_cast<char*>(&k), sizeof k);
  if (!f || std::memcmp(magic, cache_magic, sizeof magic) != 0 || k != key) return false;
  params p = zeros_like(cfg);
  for_each_tensor(p, [&](float* d, index n) {
    f.read(reinterpret_cast<char*>(d), std::streamsize(n * index(sizeof(float))));
  });
  if (!f) return false;
  out = std::move(p);
  return true;
}

}  // namespace tiny_lm
