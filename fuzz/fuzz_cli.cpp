// libFuzzer harness for yaqa-quantize's command-line and naming logic (tools/yaqa-quantize/cli.hpp,
// <yaqa/io/hessian_file.hpp>). Input: lines. First byte even: the lines are argv; parse_command_line
// must never throw, and its outcome must be consistent (options in range, or exit code 0/2 with a
// message). First byte odd: line 1 is a weight name, the rest tensor names; sketch_tags_in must return
// only tags that really name a factor of the weight.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();  // an invariant broke: libFuzzer reports it as a crash with the input
}

void fuzz_argv(const std::vector<std::string>& args) {
  std::vector<const char*> argv{"yaqa-quantize"};
  for (const auto& a : args) argv.push_back(a.c_str());
  const yaqa::cli::parse_result r = yaqa::cli::parse_command_line(int(argv.size()), argv.data());
  if (!r.opts) {
    check(r.exit_code == 0 || r.exit_code == 2);
    check(!r.message.empty());
    return;
  }
  const yaqa::cli::options& o = *r.opts;
  check(r.exit_code == 0);
  // trellis goes down to 1 bit (QTIP's K = 1); every other quantizer starts at 2
  check(o.bits >= (o.quantizer == yaqa::cli::quantizer_kind::trellis ? 1 : 2) && o.bits <= 8);
  check(o.format != yaqa::cli::output_format::automatic);  // resolved by the parser
  // GGUF blocks and GPTQ / compressed-tensors checkpoints hold W itself: never rotated
  check(!(o.quantizer == yaqa::cli::quantizer_kind::gguf && o.rht));
  check(!((o.format == yaqa::cli::output_format::gptq || o.format == yaqa::cli::output_format::compressed_tensors) &&
          (o.rht || o.quantizer != yaqa::cli::quantizer_kind::int_grid)));
  check(o.format != yaqa::cli::output_format::gguf || o.quantizer == yaqa::cli::quantizer_kind::gguf);
  check(o.tile_rows >= 1 && o.tile_cols >= 1);
  check(o.damp > 0);
  check(o.threads >= 0);
  check(o.group_size >= 0);
  check(o.sketch.find('.') == std::string::npos);
}

void fuzz_names(const std::vector<std::string>& lines) {
  if (lines.empty()) return;
  const std::string& weight = lines.front();
  const std::vector<std::string> names(lines.begin() + 1, lines.end());
  for (const std::string& tag : yaqa::sketch_tags_in(names, weight)) {
    check(!tag.empty() && tag.find('.') == std::string::npos);
    bool found = false;
    for (const auto& n : names)
      found |= n == yaqa::hessian_names::h_in(weight, tag) || n == yaqa::hessian_names::h_out(weight, tag);
    check(found);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 4096) return 0;
  std::vector<std::string> lines(1);
  for (std::size_t i = 1; i < size && lines.size() <= 64; ++i) {
    if (data[i] == '\n') lines.emplace_back();
    else lines.back() += char(data[i]);
  }
  if (data[0] % 2 == 0) fuzz_argv(lines);
  else fuzz_names(lines);
  return 0;
}
