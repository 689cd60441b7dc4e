#pragma once
// Helpers for the I/O tests: a self-removing temporary directory, raw file writing, exception
// message capture, and exact reference conversions for F16 / BF16 / F8 written independently of
// include/yaqa/io/float16.hpp (value formulas with ldexp, and rounding by exact comparison with
// the midpoint between neighbouring representable values).
#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <span>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>

namespace yaqa::test {

namespace fs = std::filesystem;

//! A fresh directory under the system temporary directory, removed with its content on scope exit.
class temp_dir {
 public:
  temp_dir() {
    static std::atomic<int> counter{0};
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("yaqa-io-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }
  [[nodiscard]] fs::path operator/(const std::string& name) const { return path_ / name; }
  //! Names of the entries in the directory (to check that no temporary file was left behind).
  [[nodiscard]] std::vector<std::string> entries() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(path_)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

//! When the environment variable YAQA_FUZZ_SEED_DIR is set, saves `image` as
//! <dir>/<format>/<name> (name reduced to [A-Za-z0-9_-]): the files the tests build, valid and
//! corrupt, become the seed corpora of the fuzzers in fuzz/ (make fuzz-smoke). Otherwise a no-op.
inline bool fuzz_seeds_wanted() { return std::getenv("YAQA_FUZZ_SEED_DIR") != nullptr; }
inline void export_fuzz_seed(std::string_view format, std::string_view name, std::string_view image) {
  const char* root = std::getenv("YAQA_FUZZ_SEED_DIR");
  if (!root || image.size() > (std::size_t{1} << 20)) return;  // seeds stay small: fuzzing is per byte
  std::string file;
  for (const char c : name) file += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
  const fs::path dir = fs::path(root) / std::string(format);
  fs::create_directories(dir);
  write_file(dir / file, image);
}

template <class T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

inline std::string u64_le(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

//! A safetensors file image: length, header text as given (no validation), then data.
inline std::string safetensors_image(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

//! Runs f, requires it to throw exactly something catchable as E, and returns the message.
template <class E, class F>
std::string thrown_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("threw another exception type: " << e.what());
  }
  FAIL("did not throw");
  return {};
}

// ---- exact reference conversions -------------------------------------------------------------

//! Value of a small IEEE-like float format with `ebits` exponent and `mbits` mantissa bits.
//! `ieee_specials`: the all-ones exponent means Inf/NaN (false for E4M3FN, where only S.1111.111
//! is NaN).
//! The bytes of a vector's elements (host order).
template <class V>
std::vector<std::byte> raw(const std::vector<V>& v) {
  const auto b = std::as_bytes(std::span(v));
  return {b.begin(), b.end()};
}

inline double ref_small_float(std::uint32_t bits, int ebits, int mbits, bool ieee_specials) {
  const std::uint32_t sign = (bits >> (ebits + mbits)) & 1u;
  const std::uint32_t e = (bits >> mbits) & ((1u << ebits) - 1);
  const std::uint32_t m = bits & ((1u << mbits) - 1);
  const int bias = (1 << (ebits - 1)) - 1;
  double v;
  if (ieee_specials && e == (1u << ebits) - 1)
    v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (!ieee_specials && e == (1u << ebits) - 1 && m == (1u << mbits) - 1)
    v = std::numeric_limits<double>::quiet_NaN();
  else if (e == 0)
    v = std::ldexp(double(m), 1 - bias - mbits);
  else
    v = std::ldexp(double(m + (1u << mbits)), int(e) - bias - mbits);
  return sign ? -v : v;
}
inline double ref_f16(std::uint16_t h) { return ref_small_float(h, 5, 10, true); }
inline double ref_bf16(std::uint16_t b) { return ref_small_float(b, 8, 7, true); }

//! Round-to-nearest-even encoder by exhaustive table: all non-negative finite values of the format
//! (increasing with the bit pattern), plus the first pattern past them (Inf) standing for the
//! value 2^(emax+1), which is where rounding overflows to. x is compared exactly (in double)
//! against the midpoint of its two neighbours, which is exactly representable in double.
class ref_encoder {
 public:
  ref_encoder(int ebits, int mbits) : ebits_(ebits), mbits_(mbits) {
    const std::uint32_t inf = ((1u << ebits) - 1) << mbits;
    for (std::uint32_t b = 0; b < inf; ++b) table_.push_back(ref_small_float(b, ebits, mbits, true));
    const int bias = (1 << (ebits - 1)) - 1;
    table_.push_back(std::ldexp(1.0, bias + 1));  // value of the pattern `inf` if it were finite
  }
  [[nodiscard]] std::uint16_t encode(double x) const {
    const std::uint32_t sign_bit = 1u << (ebits_ + mbits_);
    const std::uint32_t inf = ((1u << ebits_) - 1) << mbits_;
    const std::uint32_t s = std::signbit(x) ? sign_bit : 0;
    if (std::isnan(x)) return std::uint16_t(s | inf | (1u << (mbits_ - 1)));  // canonical; tests check NaN-ness
    const double a = std::fabs(x);
    if (a >= table_.back()) return std::uint16_t(s | inf);
    // largest k with table[k] <= a
    const std::size_t k = std::size_t(std::upper_bound(table_.begin(), table_.end(), a) - table_.begin()) - 1;
    if (table_[k] == a) return std::uint16_t(s | k);
    const double mid = (table_[k] + table_[k + 1]) / 2;  // exact: one more significand bit
    std::size_t r;
    if (a < mid)
      r = k;
    else if (a > mid)
      r = k + 1;
    else
      r = (k % 2 == 0) ? k : k + 1;
    return std::uint16_t(s | r);
  }
  //! Midpoint between the patterns k and k+1 (k+1 may be the Inf pattern).
  [[nodiscard]] double midpoint(std::size_t k) const { return (table_[k] + table_[k + 1]) / 2; }
  [[nodiscard]] std::size_t finite_count() const { return table_.size() - 1; }

 private:
  int ebits_, mbits_;
  std::vector<double> table_;
};

}  // namespace yaqa::test
