// libFuzzer harness for the .npy reader (parse_npy, the in-memory core of read_npy). A
// yaqa::error is the expected outcome for a bad image; anything else -- a crash, a sanitizer
// report, another exception type, a leak, a hang, a broken invariant below -- is a finding.
// See docs/reliability.md.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

#include <yaqa/io/npy.hpp>
#include <yaqa/io/tensor.hpp>

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_npy: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const yaqa::npy_array a = yaqa::parse_npy(bytes, "fuzz.npy");
    // Accepted: the array holds exactly numel elements, and the data filled the file exactly.
    const auto n = yaqa::detail::checked_nbytes(a.shape, yaqa::dtype_size(a.type));
    if (!n || std::size_t(*n) != a.bytes.size()) broken("bytes.size() != numel * dtype size");
    if (a.bytes.size() > size) broken("more data than input");
    if (!a.fortran_order_on_disk &&
        (a.bytes.empty() ? false : std::memcmp(a.bytes.data(), data + (size - a.bytes.size()), a.bytes.size()) != 0))
      broken("C-order data differs from the file's last bytes");
    if (a.fortran_order_on_disk && a.shape.size() == 2) {  // element (i, j) sits at j*rows + i on disk
      const std::size_t rows = std::size_t(a.shape[0]), cols = std::size_t(a.shape[1]);
      const std::size_t esz = std::size_t(yaqa::dtype_size(a.type));
      const std::uint8_t* disk = data + (size - a.bytes.size());
      for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j)
          if (std::memcmp(a.bytes.data() + (i * cols + j) * esz, disk + (j * rows + i) * esz, esz) != 0)
            broken("Fortran-order data not transposed correctly");
    }
    const yaqa::tensor_view t = a.view();
    const auto v = yaqa::to_vector<double>(t);
    if (v.size() != a.numel()) broken("to_vector size != numel");
    if (t.rank() == 1 || t.rank() == 2) {
      const auto m = yaqa::to_matrix<float>(t);
      if (m.size() != a.numel()) broken("to_matrix size != numel");
    }
  } catch (const yaqa::error&) {
    // Rejected with a yaqa error: the expected outcome for a malformed image.
  }
  return 0;
}
