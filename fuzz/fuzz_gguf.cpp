// libFuzzer harness for the GGUF reader (gguf_file::from_bytes, the validation of opening a file)
// and the importance-matrix reader (parse_imatrix: GGUF layout or legacy .dat, by content). A
// yaqa::error is the expected outcome for a bad image; anything else -- a crash, a sanitizer
// report, another exception type, a leak, a hang, a broken invariant below -- is a finding.
// Accepted GGUF images must also survive a copy through gguf_writer unchanged. See docs/reliability.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include <yaqa/io/gguf.hpp>
#include <yaqa/io/imatrix.hpp>
#include <yaqa/io/tensor.hpp>

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_gguf: invariant broken: %s\n", what);
  std::abort();
}

void check_gguf(const std::vector<std::byte>& bytes) {
  try {
    const auto f = yaqa::gguf_file::from_bytes(bytes, "fuzz.gguf");
    if (f.data_offset() % f.alignment() != 0) broken("data section not aligned");
    const std::uint64_t data_size = f.file_size() > f.data_offset() ? f.file_size() - f.data_offset() : 0;
    for (const auto& [k, v] : f.metadata())
      if (f.find_value(k) != &v) broken("find_value() does not return the value");
    for (const auto& t : f.tensors()) {
      if (f.find(t.name) != &t) broken("find() does not return the tensor");
      if (t.offset % f.alignment() != 0) broken("tensor offset not aligned");
      if (t.offset + t.bytes.size() > data_size) broken("tensor bytes outside the data section");
      const auto& info = yaqa::ggml_traits(t.type);
      if (std::uint64_t(t.numel() / info.block_size * info.type_size) != t.bytes.size()) broken("tensor byte count");
      if (info.element) {  // decode every element: ASan sees any read past the bytes
        const auto v = yaqa::to_vector<float>(f.view(t));
        if (v.size() != t.numel()) broken("to_vector size != numel");
      }
    }
    // A copy through the writer reads back identically (bounded: the writer pads each tensor).
    if (f.alignment() > 4096 || bytes.size() > (std::size_t{1} << 20)) return;
    yaqa::gguf_writer w;
    w.copy_from(f);
    const auto g = yaqa::gguf_file::from_bytes(w.to_bytes(), "copy.gguf");
    if (g.metadata().size() != f.metadata().size() || g.size() != f.size()) broken("copy: counts differ");
    for (std::size_t i = 0; i < f.metadata().size(); ++i)
      if (!(g.metadata()[i] == f.metadata()[i])) broken("copy: KV differs");
    for (std::size_t i = 0; i < f.size(); ++i) {
      const auto &a = f.tensors()[i], &b = g.tensors()[i];
      if (a.name != b.name || a.type != b.type || a.ne != b.ne || a.bytes.size() != b.bytes.size() ||
          (!a.bytes.empty() && std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) != 0))
        broken("copy: tensor differs");
    }
  } catch (const yaqa::error&) {
    // Rejected with a yaqa error: the expected outcome for a malformed image.
  }
}

void check_imatrix(std::span<const std::byte> bytes) {
  try {
    const yaqa::imatrix m = yaqa::parse_imatrix(bytes, "fuzz.imatrix");
    if (m.entries.empty()) broken("imatrix without entries accepted");
    for (std::size_t i = 0; i < m.entries.size(); ++i) {
      const auto& e = m.entries[i];
      if (i > 0 && !(m.entries[i - 1].name < e.name)) broken("entries not sorted by unique name");
      if (m.find(e.name) != &e) broken("find() does not return the entry");
      if (e.n < 1 || e.experts() < 1 || e.counts.size() != e.diagonals.size()) broken("entry shape");
      for (const auto& d : e.diagonals)
        if (d.size() != e.n) broken("diagonal length != n");
    }
  } catch (const yaqa::error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  check_gguf(bytes);
  check_imatrix(bytes);
  return 0;
}
