// Atomic writes (temporary file + rename) and the mapped reader: a failing write leaves neither a
// partial target nor a temporary file, and an existing target keeps its old content.
#include <csignal>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <io/io_support.hpp>
#include <support/generators.hpp>
#include <yaqa/io/file.hpp>
#include <yaqa/io/npy.hpp>
#include <yaqa/io/safetensors.hpp>

using namespace yaqa;
using yaqa::test::temp_dir;
using yaqa::test::thrown_message;
using Catch::Contains;

namespace {

safetensors_writer one_mib_writer() {
  safetensors_writer w;
  w.add("w", {512, 512}, std::vector<float>(512 * 512, 1.0f));
  return w;
}

// Runs f with the process's file-size limit lowered to `limit` bytes (writes past it fail with
// EFBIG instead of raising SIGXFSZ), restoring both afterwards.
template <class F>
void with_file_size_limit(rlim_t limit, F&& f) {
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit lim = old;
  lim.rlim_cur = limit;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  try {
    f();
  } catch (...) {
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    throw;
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
}

}  // namespace

TEST_CASE("a write that fails midway leaves the old file and no temporary behind", "[io][file]") {
  temp_dir dir;
  const auto path = dir / "model.safetensors";
  yaqa::test::write_file(path, "old content");
  const auto w = one_mib_writer();
  std::string msg;
  with_file_size_limit(64 * 1024, [&] { msg = thrown_message<io_error>([&] { w.write(path); }); });
  CHECK_THAT(msg, Contains("yaqa::safetensors_writer::write") && Contains(path.string()) && Contains("too large"));
  CHECK(yaqa::test::read_file(path) == "old content");
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  const auto npy = dir / "h.npy";
  with_file_size_limit(64 * 1024, [&] {
    msg = thrown_message<io_error>([&] { write_npy(npy, yaqa::test::random_matrix<double>(300, 300, 1)); });
  });
  CHECK_THAT(msg, Contains("yaqa::write_npy") && Contains(npy.string()));
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});

  // Without the limit the same writes succeed and replace the old content.
  w.write(path);
  CHECK(safetensors_file(path).at("w").numel() == 512 * 512);
  CHECK(dir.entries() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("writes into a missing, non-directory or unwritable location raise io_error naming the path",
          "[io][file]") {
  temp_dir dir;
  const auto w = one_mib_writer();
  const auto missing = dir / "no" / "such" / "dir" / "x.safetensors";
  auto msg = thrown_message<io_error>([&] { w.write(missing); });
  CHECK_THAT(msg, Contains(missing.string()) && Contains("No such file"));

  yaqa::test::write_file(dir / "plain", "x");
  const auto under_file = dir / "plain" / "x.npy";
  msg = thrown_message<io_error>([&] { write_npy(under_file, dtype::u8, {1}, std::vector<std::byte>{std::byte{1}}); });
  CHECK_THAT(msg, Contains(under_file.string()) && Contains("Not a directory"));

  std::filesystem::create_directory(dir / "sub");
  msg = thrown_message<io_error>([&] { w.write(dir / "sub"); });
  CHECK_THAT(msg, Contains("sub") && Contains("is a directory"));
  CHECK(dir.entries() == std::vector<std::string>{"plain", "sub"});

  if (::geteuid() != 0) {  // root ignores directory permissions
    const auto ro = dir / "ro";
    std::filesystem::create_directory(ro);
    std::filesystem::permissions(ro, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    msg = thrown_message<io_error>([&] { w.write(ro / "x.safetensors"); });
    CHECK_THAT(msg, Contains((ro / "x.safetensors").string()) && Contains("Permission denied"));
    std::filesystem::permissions(ro, std::filesystem::perms::owner_all);
    CHECK(std::filesystem::is_empty(ro));
  } else {
    WARN("running as root: the read-only directory case is covered by the file-size-limit test instead");
  }
}

TEST_CASE("atomic_output_file publishes only on commit", "[io][file]") {
  temp_dir dir;
  const auto path = dir / "out.bin";
  {
    atomic_output_file f(path, "test");
    f.write(std::string_view("abc"));
    CHECK(std::filesystem::exists(f.temporary_path()));
    CHECK(f.temporary_path().parent_path() == dir.path());
    CHECK_FALSE(std::filesystem::exists(path));
  }  // abandoned: removed
  CHECK(dir.entries().empty());
  {
    atomic_output_file f(path, "test");
    f.write(std::string_view("abc"));
    f.write(std::string_view("def"));
    CHECK(f.written() == 6);
    f.commit();
  }
  CHECK(yaqa::test::read_file(path) == "abcdef");
  CHECK(dir.entries() == std::vector<std::string>{"out.bin"});
}

TEST_CASE("mapped_file maps or reads, and moves", "[io][file]") {
  temp_dir dir;
  const auto path = dir / "f.bin";
  yaqa::test::write_file(path, "hello world");
  for (bool mm : {true, false}) {
    mapped_file a(path, mm, "test");
    CHECK(a.is_mapped() == mm);
    mapped_file b(std::move(a));
    CHECK(a.size() == 0);
    REQUIRE(b.size() == 11);
    CHECK(std::string(reinterpret_cast<const char*>(b.bytes().data()), 11) == "hello world");
    mapped_file c;
    c = std::move(b);
    CHECK(std::string(reinterpret_cast<const char*>(c.bytes().data()), 5) == "hello");
  }
  yaqa::test::write_file(dir / "empty", "");
  CHECK(mapped_file(dir / "empty", true, "test").size() == 0);
}
