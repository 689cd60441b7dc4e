#pragma once
//! \file
//! The text the demo trains and evaluates on, and its train / held-out split.
//!
//! The default corpus is the repository's own text (docs, headers, sources, tools), so the demo
//! runs on a fresh clone with nothing to download. The concatenated text is cut into chunks of
//! `chunk` bytes and every `holdout_every`-th chunk is held out: the held-out text is spread over
//! every kind of file rather than being one file type at the end of the sorted list. Each chunk
//! is its own segment: contexts never reach across a segment boundary (they are padded with byte
//! 0 instead), so no held-out byte is ever seen in training, as a target or as context.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <yaqa/core/error.hpp>

#include "model.hpp"

namespace tiny_lm {

//! A half-open byte range [begin, end) of the corpus text.
struct segment {
  index begin = 0;
  index end = 0;
  [[nodiscard]] index size() const { return end - begin; }
};

struct corpus {
  std::string text;
  std::vector<segment> train;
  std::vector<segment> heldout;
  std::vector<std::string> files;  //!< what was read (for the report)

  [[nodiscard]] index train_bytes() const { return total(train); }
  [[nodiscard]] index heldout_bytes() const { return total(heldout); }
  static index total(const std::vector<segment>& s) {
    index n = 0;
    for (const auto& x : s) n += x.size();
    return n;
  }
};

//! 64-bit FNV-1a: the cache key of trained weights (corpus text plus configuration).
inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  yaqa::detail::require<yaqa::io_error>(bool(f), "tiny_lm::read_file: cannot open '",
                                        path.string(), "'");
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

//! Splits text into chunks of `chunk` bytes; chunk i is held out when i % every == every - 1.
inline void split(corpus& c, index chunk = 4096, index every = 10) {
  yaqa::detail::require(chunk > 0 && every >= 2, "tiny_lm::split: arguments 'chunk' (", chunk,
                        ") and 'every' (", every, ") must be > 0 and >= 2");
  c.train.clear();
  c.heldout.clear();
  const index n = static_cast<index>(c.text.size());
  for (index s = 0, i = 0; s < n; s += chunk, ++i) {
    const segment seg{s, std::min(n, s + chunk)};
    (i % every == every - 1 ? c.heldout : c.train).push_back(seg);
  }
  yaqa::detail::require(!c.heldout.empty() && !c.train.empty(),
                        "tiny_lm::split: the corpus (", n, " bytes) must be at least ",
                        chunk * every, " bytes for a train and a held-out part");
}

//! The repository's text files, in sorted path order, each preceded by a "==> path <==" line.
//! Binary files (with a NUL byte) and files over 1 MiB are skipped.
inline corpus repository_corpus(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  static const char* dirs[] = {"docs", "include", "examples", "tests", "tools", "bench", "cmake"};
  static const char* top[] = {"README.md", "CMakeLists.txt", "Makefile"};
  static const char* exts[] = {".md", ".hpp", ".cpp", ".h", ".cu", ".cuh", ".py", ".sh", ".txt",
                               ".cmake", ".in"};
  std::vector<fs::path> paths;
  for (const char* t : top)
    if (fs::is_regular_file(root / t)) paths.push_back(fs::path(t));
  for (const char* d : dirs) {
    if (!fs::is_directory(root / d)) continue;
    for (const auto& e : fs::recursive_directory_iterator(root / d)) {
      if (!e.is_regular_file()) continue;
      const auto ext = e.path().extension().string();
      if (std::find_if(std::begin(exts), std::end(exts), [&](const char* x) { return ext == x; }) ==
          std::end(exts))
        continue;
      paths.push_back(fs::relative(e.path(), root));
    }
  }
  std::sort(paths.begin(), paths.end());
  corpus c;
  for (const auto& p : paths) {
    if (fs::file_size(root / p) > (1u << 20)) continue;
    const std::string s = read_file(root / p);
    if (s.find('\0') != std::string::npos) continue;
    c.text += "==> " + p.generic_string() + " <==\n";
    c.text += s;
    if (!s.empty() && s.back() != '\n') c.text += '\n';
    c.files.push_back(p.generic_string());
  }
  yaqa::detail::require<yaqa::io_error>(!c.text.empty(), "tiny_lm::repository_corpus: no text "
                                        "files found under '", root.string(), "'");
  return c;
}

inline corpus file_corpus(const std::filesystem::path& path) {
  corpus c;
  c.text = read_file(path);
  c.files.push_back(path.string());
  return c;
}

//! Fills b with the prediction positions `pos` (absolute offsets into text, each inside seg):
//! context = the `context` bytes before the position, clipped at the segment start and
//! left-padded with byte 0.
inline void make_batch(const std::string& text, const std::vector<index>& pos,
                       const std::vector<segment>& segs, const std::vector<index>& seg_of,
                       index context, batch& b) {
  const index n = static_cast<index>(pos.size());
  b.context.assign(std::size_t(n * context), 0);
  b.target.resize(std::size_t(n));
  for (index i = 0; i < n; ++i) {
    const index p = pos[std::size_t(i)];
    const index s0 = segs[std::size_t(seg_of[std::size_t(i)])].begin;
    b.target[std::size_t(i)] = static_cast<std::uint8_t>(text[std::size_t(p)]);
    for (index c = 0; c < context; ++c) {
      const index q = p - context + c;
      if (q >= s0) b.context[std::size_t(i * context + c)] = static_cast<std::uint8_t>(text[std::size_t(q)]);
    }
  }
}

//! A flat list of the prediction positions of a set of segments (every byte is a target).
struct position_set {
  std::vector<index> pos;     //!< absolute offsets
  std::vector<index> seg_of;  //!< segment of each position

  static position_set of(const std::vector<segment>& segs, index limit = -1) {
    position_set ps;
    for (std::size_t s = 0; s < segs.size(); ++s)
      for (index p = segs[s].begin; p < segs[s].end; ++p) {
        if (limit >= 0 && static_cast<index>(ps.pos.size()) >= limit) return ps;
        ps.pos.push_back(p);
        ps.seg_of.push_back(static_cast<index>(s));
      }
    return ps;
  }
  [[nodiscard]] index size() const { return static_cast<index>(pos.size()); }

  //! Batch of positions [first, first + count).
  void fill(const corpus& c, const std::vector<segment>& segs, index first, index count,
            index context, batch& b) const {
    const std::vector<index> p(pos.begin() + first, pos.begin() + first + count);
    const std::vector<index> s(seg_of.begin() + first, seg_of.begin() + first + count);
    make_batch(c.text, p, segs, s, context, b);
  }
};

}  // namespace tiny_lm
