#pragma once
//! \file
//! POSIX file plumbing shared by the readers and writers:
//!  - mapped_file: a read-only file image, memory-mapped (so opening a multi-GB checkpoint costs
//!    only what is touched) or read into memory;
//!  - atomic_output_file: writes to a temporary file in the target's directory and renames it
//!    over the target on commit, so readers never see a partial file and a failure leaves the
//!    previous file (if any) untouched and no temporary behind.
//! Every failure is an io_error naming the routine, the path and the OS reason.
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

namespace detail {

inline std::string errno_text(int err) { return std::strerror(err); }

//! Closes fd on scope exit unless released.
class fd_guard {
 public:
  explicit fd_guard(int fd = -1) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace detail

//! A read-only image of a whole regular file. Move-only.
//! With memory mapping (the default) pages are read lazily by the OS: opening is O(1) in the file
//! size. Caveat of every mmap reader: if another process truncates the file while it is mapped,
//! touching the lost pages raises SIGBUS; replace files by rename (as our writers do) instead.
class mapped_file {
 public:
  mapped_file() = default;

  //! Opens `path`; `what` names the calling routine in error messages.
  mapped_file(const std::filesystem::path& path, bool memory_map, std::string_view what) {
    detail::fd_guard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0)
      throw io_error(detail::concat(what, ": cannot open '", path.string(), "': ", detail::errno_text(errno)));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
      throw io_error(detail::concat(what, ": cannot stat '", path.string(), "': ", detail::errno_text(errno)));
    if (!S_ISREG(st.st_mode))
      throw io_error(detail::concat(what, ": '", path.string(), "' is not a regular file"));
    size_ = std::size_t(st.st_size);
    if (size_ == 0) return;
    if (memory_map) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
      if (p == MAP_FAILED)
        throw io_error(detail::concat(what, ": cannot memory-map '", path.string(), "' (", size_,
                                      " bytes): ", detail::errno_text(errno)));
      map_ = p;
      data_ = static_cast<const std::byte*>(p);
    } else {
      buffer_.resize(size_);
      std::size_t done = 0;
      while (done < size_) {
        const ssize_t r = ::pread(fd.get(), buffer_.data() + done, size_ - done, off_t(done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
          throw io_error(detail::concat(what, ": cannot read '", path.string(), "': ", detail::errno_text(errno)));
        if (r == 0)
          throw io_error(detail::concat(what, ": '", path.string(), "' shrank while being read (expected ", size_,
                                        " bytes, got ", done, ")"));
        done += std::size_t(r);
      }
      data_ = buffer_.data();
    }
  }

  //! An image of bytes already in memory (taken over, not copied): lets the readers parse a
  //! buffer exactly as they parse a file (fuzzing, archives, network input).
  static mapped_file from_bytes(std::vector<std::byte> bytes) {
    mapped_file f;
    f.size_ = bytes.size();
    f.buffer_ = std::move(bytes);
    f.data_ = f.buffer_.data();
    return f;
  }

  mapped_file(mapped_file&& o) noexcept { swap(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    mapped_file tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
    if (map_) ::munmap(map_, size_);
  }

  [[nodiscard]] std::span<const std::byte> bytes() const { return {data_, size_}; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] bool is_mapped() const { return map_ != nullptr; }

 private:
  void swap(mapped_file& o) noexcept {
    std::swap(map_, o.map_);
    std::swap(size_, o.size_);
    buffer_.swap(o.buffer_);
    std::swap(data_, o.data_);
    // data_ of a buffered file points into buffer_, whose storage moved with the swap.
  }

  void* map_ = nullptr;
  std::size_t size_ = 0;
  std::vector<std::byte> buffer_;
  const std::byte* data_ = nullptr;
};

//! Throws invalid_argument when `target` names the same file as one of `forbidden` (by
//! filesystem::equivalent when both exist, else by normalized absolute path). Lets a tool refuse
//! to overwrite its own inputs, including through symlinks or hard links.
inline void check_not_forbidden(const char* what, const std::filesystem::path& target,
                                const std::vector<std::filesystem::path>& forbidden) {
  namespace fs = std::filesystem;
  for (const auto& p : forbidden) {
    std::error_code e1, e2, e3;
    bool same = false;
    if (fs::exists(target, e1) && fs::exists(p, e2)) {
      same = fs::equivalent(target, p, e3) && !e3;
    } else {
      const auto a = fs::weakly_canonical(fs::absolute(target, e1), e2);
      const auto b = fs::weakly_canonical(fs::absolute(p, e1), e3);
      same = a == b;
    }
    detail::require<invalid_argument>(!same, what, ": refusing to write '", target.string(),
                                      "': it is the input file '", p.string(), "'; choose another output path");
  }
}

//! Write-to-temporary-then-rename. The temporary lives in the target's directory (rename is
//! only atomic within one filesystem) under a hidden unique name; it is created with mode 0666
//! minus the umask, like any new file. commit() flushes it to disk (fsync), renames it over the
//! target and syncs the directory; destroying the object without commit() removes it.
class atomic_output_file {
 public:
  atomic_output_file(std::filesystem::path target, std::string_view what) : target_(std::move(target)), what_(what) {
    namespace fs = std::filesystem;
    require_io(!target_.filename().empty(), "cannot write '", target_.string(), "': not a file name");
    std::error_code ec;
    if (fs::is_directory(target_, ec))
      fail_plain("cannot write '" + target_.string() + "': it is a directory");
    const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      tmp_ = dir / detail::concat('.', target_.filename().string(), ".yaqa-tmp-", ::getpid(), '-', counter++, '-',
                                  rd() % 1000000u);
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) {
      const int err = errno;
      tmp_.clear();
      fail_plain(detail::concat("cannot create a temporary file in '", dir.string(), "' to write '",
                                target_.string(), "': ", detail::errno_text(err)));
    }
  }
  atomic_output_file(const atomic_output_file&) = delete;
  atomic_output_file& operator=(const atomic_output_file&) = delete;
  ~atomic_output_file() { discard(); }

  //! Appends bytes (retrying short writes and EINTR).
  void write(std::span<const std::byte> b) {
    std::size_t done = 0;
    while (done < b.size()) {
      const ssize_t r = ::write(fd_, b.data() + done, b.size() - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail_errno("cannot write");
      done += std::size_t(r);
    }
    written_ += b.size();
  }
  void write(std::string_view s) { write(std::as_bytes(std::span(s.data(), s.size()))); }

  //! Bytes appended so far.
  [[nodiscard]] std::uint64_t written() const { return written_; }

  //! Makes the new content visible under the target name.
  void commit() {
    if (::fsync(fd_) != 0) fail_errno("cannot flush");
    if (::close(std::exchange(fd_, -1)) != 0) fail_errno("cannot close");
    if (::rename(tmp_.c_str(), target_.c_str()) != 0) fail_errno("cannot rename the temporary file onto");
    tmp_.clear();
    // Persist the directory entry too; failure here (e.g. a filesystem without directory fsync)
    // does not undo the write, so it is ignored.
    const auto dir = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
    detail::fd_guard dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.get() >= 0) (void)::fsync(dfd.get());
  }

  [[nodiscard]] const std::filesystem::path& temporary_path() const { return tmp_; }

 private:
  void discard() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!tmp_.empty()) {
      ::unlink(tmp_.c_str());
      tmp_.clear();
    }
  }
  [[noreturn]] void fail_plain(const std::string& msg) {
    discard();
    throw io_error(detail::concat(what_, ": ", msg));
  }
  [[noreturn]] void fail_errno(const char* action) {
    const int err = errno;
    discard();
    throw io_error(detail::concat(what_, ": ", action, " '", target_.string(), "': ", detail::errno_text(err),
                                  " (nothing was written; the previous file, if any, is unchanged)"));
  }
  template <class... A>
  void require_io(bool cond, A&&... a) {
    if (!cond) fail_plain(detail::concat(std::forward<A>(a)...));
  }

  std::filesystem::path target_;
  std::string what_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

}  // namespace yaqa
