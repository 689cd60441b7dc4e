// libFuzzer harness for the safetensors reader (safetensors_file::from_bytes, which runs the same
// validation as opening a file). A yaqa::error is the expected outcome for a bad image; anything
// else -- a crash, a sanitizer report, another exception type, a leak, a hang, a broken
// invariant below -- is a finding. See docs/reliability.md.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <vector>

#include <yaqa/io/safetensors.hpp>
#include <yaqa/io/tensor.hpp>

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
  std::abort();
}

// Converts t the ways a tool would; every element is decoded, so ASan sees any read past its bytes.
void exercise(const yaqa::tensor_view& t) {
  const auto f = yaqa::to_vector<float>(t);
  if (f.size() != t.numel()) broken("to_vector size != numel");
  if (t.rank() == 1 || t.rank() == 2) {
    const auto m = yaqa::to_matrix<double>(t);
    const auto mt = yaqa::to_matrix_transposed<float>(t);
    if (m.size() != t.numel() || mt.rows() != m.cols() || mt.cols() != m.rows()) broken("matrix shape");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  for (const bool allow_gaps : {false, true}) {
    yaqa::safetensors_read_options opt;
    opt.allow_gaps = allow_gaps;
    try {
      const auto file = yaqa::safetensors_file::from_bytes(bytes, "fuzz.safetensors", opt);
      // Accepted: every view must lie inside the data section, in name order, and be findable.
      if (8 + file.header_size() + file.data_size() != size) broken("header + data size != file size");
      std::uint64_t total = 0;
      const yaqa::tensor_view* prev = nullptr;
      for (const auto& t : file.tensors()) {
        if (prev && !(prev->name < t.name)) broken("tensors not sorted by unique name");
        if (file.find(t.name) != &t) broken("find() does not return the tensor");
        total += t.bytes.size();
        exercise(t);
        prev = &t;
      }
      if (total > file.data_size()) broken("tensors hold more bytes than the data section");
      if (!allow_gaps && total != file.data_size()) broken("gaps accepted without allow_gaps");
    } catch (const yaqa::error&) {
      // Rejected with a yaqa error: the expected outcome for a malformed image.
    }
  }
  return 0;
}
