// tiny_lm's data handling and metrics: the train / held-out split never leaks held-out bytes,
// batches clip contexts at segment starts, labels are sampled from the given distribution, and
// KL / bits-per-byte match naive loops.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <support/generators.hpp>

#include "corpus.hpp"
#include "evaluate.hpp"
#include "fisher.hpp"

using tiny_lm::mat;

namespace {

tiny_lm::corpus text_corpus(std::size_t n, std::uint64_t seed) {
  tiny_lm::corpus c;
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < n; ++i) c.text.push_back(char('a' + rng() % 26));
  return c;
}

}  // namespace

TEST_CASE("split: every 10th chunk is held out, the parts tile the text", "[demo][data]") {
  tiny_lm::corpus c = text_corpus(10 * 1000 + 777, 1);  // last chunk is partial
  tiny_lm::split(c, 1000, 10);
  REQUIRE(c.heldout.size() == 1);
  REQUIRE(c.train.size() == 10);
  REQUIRE(c.heldout[0].begin == 9000);
  REQUIRE(c.heldout[0].end == 10000);
  REQUIRE(c.train.back().end == yaqa::index(c.text.size()));
  REQUIRE(c.train_bytes() + c.heldout_bytes() == yaqa::index(c.text.size()));
  std::vector<int> owner(c.text.size(), 0);
  for (const auto& s : c.train)
    for (auto p = s.begin; p < s.end; ++p) owner[std::size_t(p)] += 1;
  for (const auto& s : c.heldout)
    for (auto p = s.begin; p < s.end; ++p) owner[std::size_t(p)] += 2;
  for (int o : owner) REQUIRE((o == 1 || o == 2));
  tiny_lm::corpus tiny = text_corpus(5000, 2);
  REQUIRE_THROWS_AS(tiny_lm::split(tiny, 1000, 10), yaqa::invalid_argument);
  REQUIRE_THROWS_WITH(tiny_lm::split(tiny, 0, 10), Catch::Contains("tiny_lm::split") &&
                                                       Catch::Contains("'chunk'"));
}

TEST_CASE("batches: contexts never reach across a segment start, no held-out byte in training",
          "[demo][data]") {
  tiny_lm::corpus c = text_corpus(20 * 97, 3);  // segments of 97 bytes (not a power of two)
  tiny_lm::split(c, 97, 4);
  const yaqa::index context = 13;
  const auto ps = tiny_lm::position_set::of(c.train);
  REQUIRE(ps.size() == c.train_bytes());
  tiny_lm::batch b;
  ps.fill(c, c.train, 0, ps.size(), context, b);
  std::set<yaqa::index> held;
  for (const auto& s : c.heldout)
    for (auto p = s.begin; p < s.end; ++p) held.insert(p);
  for (yaqa::index i = 0; i < ps.size(); ++i) {
    const yaqa::index p = ps.pos[std::size_t(i)];
    const auto& seg = c.train[std::size_t(ps.seg_of[std::size_t(i)])];
    REQUIRE(held.count(p) == 0);
    REQUIRE(b.target[std::size_t(i)] == std::uint8_t(c.text[std::size_t(p)]));
    for (yaqa::index k = 0; k < context; ++k) {
      const yaqa::index q = p - context + k;  // absolute position of context byte k
      const std::uint8_t got = b.context[std::size_t(i * context + k)];
      if (q < seg.begin) REQUIRE(got == 0);
      else {
        REQUIRE(held.count(q) == 0);
        REQUIRE(got == std::uint8_t(c.text[std::size_t(q)]));
      }
    }
  }
  // a limited position set takes the first positions in text order
  const auto lim = tiny_lm::position_set::of(c.heldout, 150);
  REQUIRE(lim.size() == 150);
  REQUIRE(lim.pos[100] == c.heldout[1].begin + 3);
}

TEST_CASE("repository corpus: sorted text files with headers, binary files skipped", "[demo][data]") {
  namespace fs = std::filesystem;
  const auto root = fs::temp_directory_path() / "yaqa_tests_demo_repo";
  fs::remove_all(root);
  fs::create_directories(root / "docs" / "sub");
  fs::create_directories(root / "include");
  auto put = [&](const fs::path& p, const std::string& s) { std::ofstream(root / p, std::ios::binary) << s; };
  put("README.md", "readme\n");
  put("docs/b.md", "bee");
  put("docs/sub/a.md", "aye\n");
  put("include/x.hpp", "int x;\n");
  put("include/blob.hpp", std::string("bin\0ary", 7));
  put("include/skip.bin", "not text by extension\n");
  const auto c = tiny_lm::repository_corpus(root);
  REQUIRE(c.files == std::vector<std::string>{"README.md", "docs/b.md", "docs/sub/a.md", "include/x.hpp"});
  REQUIRE(c.text ==
          "==> README.md <==\nreadme\n==> docs/b.md <==\nbee\n==> docs/sub/a.md <==\naye\n"
          "==> include/x.hpp <==\nint x;\n");
  fs::remove_all(root);
  REQUIRE_THROWS_AS(tiny_lm::repository_corpus(root), yaqa::io_error);
}

TEST_CASE("sample_byte draws from the row's distribution", "[demo][data]") {
  mat logits = mat::Constant(1, tiny_lm::vocab, -30.f);
  logits(0, 3) = 0.f;
  logits(0, 200) = float(std::log(3.0));  // p(200) = 3/4, p(3) = 1/4 (others ~1e-13)
  const mat lp = tiny_lm::log_softmax(logits);
  std::mt19937_64 rng(5);
  int c3 = 0, c200 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const auto v = tiny_lm::sample_byte(lp, 0, rng);
    c3 += v == 3;
    c200 += v == 200;
  }
  REQUIRE(c3 + c200 == n);
  // binomial sd = sqrt(n p q) ~ 61: 5 sd
  REQUIRE(std::abs(c200 - 0.75 * n) < 310);
}

TEST_CASE("calibration set: windows lie inside train segments, same seed, same windows",
          "[demo][data]") {
  tiny_lm::corpus c = text_corpus(30 * 101, 6);
  tiny_lm::split(c, 101, 5);
  tiny_lm::calibration_config cc;
  cc.sequences = 40;
  cc.length = 33;
  const auto a = tiny_lm::make_calibration_set(c, cc);
  const auto b = tiny_lm::make_calibration_set(c, cc);
  REQUIRE(a.start == b.start);
  for (std::size_t i = 0; i < a.start.size(); ++i) {
    const auto& seg = c.train[std::size_t(a.segment_index[i])];
    REQUIRE(a.start[i] >= seg.begin);
    REQUIRE(a.start[i] + cc.length <= seg.end);
  }
  cc.length = 500;
  REQUIRE_THROWS_WITH(tiny_lm::make_calibration_set(c, cc), Catch::Contains("'length'"));
}

TEST_CASE("compare_log_probs: KL and bits per byte match naive loops", "[demo][eval]") {
  const yaqa::index n = 23;
  const mat p = tiny_lm::log_softmax(yaqa::test::random_matrix<float>(n, tiny_lm::vocab, 7, 2.0));
  const mat q = tiny_lm::log_softmax(yaqa::test::random_matrix<float>(n, tiny_lm::vocab, 8, 2.0));
  std::vector<std::uint8_t> t;
  for (yaqa::index i = 0; i < n; ++i) t.push_back(std::uint8_t((i * 91) % 256));
  double kl = 0, ce = 0;
  for (yaqa::index i = 0; i < n; ++i) {
    for (yaqa::index v = 0; v < tiny_lm::vocab; ++v)
      kl += std::exp(double(p(i, v))) * (double(p(i, v)) - double(q(i, v)));
    ce -= q(i, t[std::size_t(i)]);
  }
  const auto r = tiny_lm::compare_log_probs(p, q, t);
  REQUIRE(r.kl == Approx(kl / double(n)).epsilon(1e-9));
  REQUIRE(r.bpb == Approx(ce / double(n) / std::log(2.0)).epsilon(1e-9));
  REQUIRE(r.kl > 0);
  REQUIRE(tiny_lm::compare_log_probs(p, p, t).kl == Approx(0.0).margin(1e-12));
  REQUIRE_THROWS_AS(tiny_lm::compare_log_probs(p, q.topRows(3), t), yaqa::shape_error);
}
