// The Hessian naming convention and loading factors stored full or packed.
#include <yaqa/io/hessian_file.hpp>

#include "io/io_support.hpp"
#include "support/approx.hpp"
#include "support/generators.hpp"

using namespace yaqa;
using namespace yaqa::test;

namespace {

template <class T>
std::vector<T> packed_lower(const matrix<double>& a) {
  std::vector<T> v;
  for (yaqa::index i = 0; i < a.rows(); ++i)
    for (yaqa::index j = 0; j <= i; ++j) v.push_back(T(a(i, j)));  // torch.tril_indices order
  return v;
}

}  // namespace

TEMPLATE_TEST_CASE("to_symmetric_matrix: full and packed, F32 and F64, any n", "[io][hessian_file]", float, double) {
  temp_dir dir;
  for (const yaqa::index n : {1, 2, 7, 33}) {
    matrix<double> a = random_spd<double>(n, 100.0, std::uint64_t(n));
    a = ((a + a.transpose()) * 0.5).eval();
    safetensors_writer w;
    w.add("full64", view(std::as_const(a)), dtype::f64);
    w.add("full32", view(std::as_const(a)), dtype::f32);
    w.add("packed64", {n * (n + 1) / 2}, packed_lower<double>(a), dtype::f64);
    w.add("packed32", {n * (n + 1) / 2}, packed_lower<float>(a), dtype::f32);
    w.write(dir / "h.safetensors");
    const safetensors_file f(dir / "h.safetensors");
    for (const char* name : {"full64", "full32", "packed64", "packed32"}) {
      INFO(name << " n=" << n);
      const matrix<TestType> got = to_symmetric_matrix<TestType>(f.at(name), n);
      CHECK(got == got.transpose());
      const double tol = std::string(name).ends_with("32") || sizeof(TestType) == 4 ? 1e-6 : 1e-15;
      CHECK(rel_frobenius(got.template cast<double>(), a) < tol);
    }
    // full and packed of the same precision agree exactly
    CHECK(to_symmetric_matrix<TestType>(f.at("full32"), n) == to_symmetric_matrix<TestType>(f.at("packed32"), n));
  }
}

TEST_CASE("to_symmetric_matrix: rejects wrong dtype, shape, NaN and asymmetry, naming the tensor", "[io][hessian_file]") {
  temp_dir dir;
  const yaqa::index n = 5;
  matrix<double> a = random_spd<double>(n, 10.0, 3);
  a = ((a + a.transpose()) * 0.5).eval();
  matrix<double> nan = a;
  nan(3, 1) = nan(1, 3) = std::numeric_limits<double>::quiet_NaN();
  matrix<double> asym = a;
  asym(4, 0) += 0.5;
  safetensors_writer w;
  w.add("h.f16", view(std::as_const(a)), dtype::f16);
  w.add("h.nan", view(std::as_const(nan)), dtype::f32);
  w.add("h.asym", view(std::as_const(asym)), dtype::f32);
  w.add("h.rect", a.topRows(4), dtype::f32);
  w.add("h.packed_short", {n * (n + 1) / 2 - 1}, std::vector<float>(n * (n + 1) / 2 - 1, 1.0f));
  std::vector<float> pn = packed_lower<float>(a);
  pn[7] = std::numeric_limits<float>::infinity();
  w.add("h.packed_inf", {yaqa::index(pn.size())}, pn);
  w.write(dir / "bad.safetensors");
  const safetensors_file f(dir / "bad.safetensors");

  auto msg = thrown_message<format_error>([&] { (void)to_symmetric_matrix<float>(f.at("h.f16"), n); });
  CHECK_THAT(msg, Catch::Contains("tensor 'h.f16'") && Catch::Contains("bad.safetensors") &&
                      Catch::Contains("dtype F16; expected F32 or F64"));
  msg = thrown_message<shape_error>([&] { (void)to_symmetric_matrix<float>(f.at("h.rect"), n); });
  CHECK_THAT(msg, Catch::Contains("tensor 'h.rect'") && Catch::Contains("[4, 5]") &&
                      Catch::Contains("expected [5, 5] (full) or [15] (packed lower triangle)"));
  msg = thrown_message<shape_error>([&] { (void)to_symmetric_matrix<float>(f.at("h.packed_short"), n); });
  CHECK_THAT(msg, Catch::Contains("[14]"));
  msg = thrown_message<non_finite_error>([&] { (void)to_symmetric_matrix<float>(f.at("h.nan"), n); });
  CHECK_THAT(msg, Catch::Contains("tensor 'h.nan'") && Catch::Contains("nan"));
  msg = thrown_message<non_finite_error>([&] { (void)to_symmetric_matrix<double>(f.at("h.packed_inf"), n); });
  CHECK_THAT(msg, Catch::Contains("tensor 'h.packed_inf'") && Catch::Contains("inf"));
  msg = thrown_message<invalid_argument>([&] { (void)to_symmetric_matrix<float>(f.at("h.asym"), n); });
  CHECK_THAT(msg, Catch::Contains("tensor 'h.asym'") && Catch::Contains("is not symmetric") &&
                      Catch::Contains("H[4, 0] - H[0, 4]"));
}

TEST_CASE("find_layer_hessians: the naming convention, tags and incomplete factors", "[io][hessian_file]") {
  temp_dir dir;
  const matrix<float> i4 = matrix<float>::Identity(4, 4);
  safetensors_writer w;
  w.add("a.weight.H", view(i4));
  w.add("b.weight.H_in", view(i4));
  w.add("b.weight.H_out", view(i4));
  w.add("c.weight.sa.H_in", view(i4));
  w.add("c.weight.sa.H_out", view(i4));
  w.add("c.weight.sb.H_in", view(i4));
  w.add("c.weight.sb.H_out", view(i4));
  w.add("d.weight.x.H_in", view(i4));  // H_out missing
  w.add("c.weight.sa.extra.H_in", view(i4));  // not a tag: contains a dot
  w.write(dir / "h.safetensors");
  const safetensors_file f(dir / "h.safetensors");

  CHECK(sketch_tags(f, "c.weight") == std::vector<std::string>{"sa", "sb"});
  CHECK(sketch_tags(f, "a.weight").empty());
  CHECK(hessian_names::h_in("x", "t") == "x.t.H_in");
  CHECK(hessian_names::h_out("x") == "x.H_out");

  CHECK_FALSE(find_layer_hessians(f, "zzz.weight", "", true));
  CHECK_FALSE(find_layer_hessians(f, "zzz.weight", "sa", false));
  auto r = find_layer_hessians(f, "a.weight", "", false);
  REQUIRE(r);
  CHECK(r->h_in->name == "a.weight.H");
  CHECK(r->h_out == nullptr);
  r = find_layer_hessians(f, "a.weight", "sa", false);  // NAME.H wins for one-sided methods
  CHECK(r->h_in->name == "a.weight.H");
  r = find_layer_hessians(f, "b.weight", "", true);
  CHECK(r->h_in->name == "b.weight.H_in");
  CHECK(r->h_out->name == "b.weight.H_out");
  r = find_layer_hessians(f, "b.weight", "", false);  // no NAME.H: the untagged input factor
  CHECK(r->h_in->name == "b.weight.H_in");
  r = find_layer_hessians(f, "c.weight", "sb", true);
  CHECK(r->h_in->name == "c.weight.sb.H_in");
  CHECK(r->h_out->name == "c.weight.sb.H_out");
  r = find_layer_hessians(f, "c.weight", "sa", false);
  CHECK(r->h_in->name == "c.weight.sa.H_in");

  auto msg = thrown_message<format_error>([&] { (void)find_layer_hessians(f, "c.weight", "sc", true); });
  CHECK_THAT(msg, Catch::Contains("sketch tag 'sc' is missing") && Catch::Contains("sketch tags present for it: sa, sb") &&
                      Catch::Contains("h.safetensors"));
  msg = thrown_message<format_error>([&] { (void)find_layer_hessians(f, "c.weight", "", true); });
  CHECK_THAT(msg, Catch::Contains("'c.weight.H_in' / 'c.weight.H_out'") && Catch::Contains("pass the sketch tag"));
  msg = thrown_message<format_error>([&] { (void)find_layer_hessians(f, "a.weight", "", true); });
  CHECK_THAT(msg, Catch::Contains("it has 'a.weight.H'"));
  msg = thrown_message<format_error>([&] { (void)find_layer_hessians(f, "d.weight", "x", true); });
  CHECK_THAT(msg, Catch::Contains("'d.weight.x.H_out'") && Catch::Contains("not the output factor"));
  msg = thrown_message<format_error>([&] { (void)find_layer_hessians(f, "c.weight", "sz", false); });
  CHECK_THAT(msg, Catch::Contains("'c.weight.H' or 'c.weight.sz.H_in'"));
}
