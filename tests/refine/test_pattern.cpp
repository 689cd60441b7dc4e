// SDE patterns: parsing, membership, parameter counts, validation against the rank.
#include <catch2/catch.hpp>

#include <yaqa/refine/pattern.hpp>

using namespace yaqa;

TEST_CASE("sde patterns parse and print back", "[refine][pattern]") {
  for (const char* s : {"diag", "full", "band:0", "band:3", "topleft:1", "topleft:64"}) {
    const sde_pattern p = parse_sde_pattern(s);
    CHECK(to_string(p) == s);
  }
  CHECK(parse_sde_pattern("band:2") == sde_pattern{sde_shape::band, 2});
  CHECK(parse_sde_pattern("topleft:7") == sde_pattern{sde_shape::topleft, 7});
}

TEST_CASE("sde pattern garbage gives a clear error", "[refine][pattern]") {
  for (const char* s : {"", "Diag", "band", "band:", "band:-1", "band:x", "band:2x", "topleft:0", "topleft:-3",
                        "full:2", "circle:3", "band:99999999999", ":3"}) {
    INFO(s);
    CHECK_THROWS_AS(parse_sde_pattern(s), invalid_argument);
    try {
      (void)parse_sde_pattern(s);
    } catch (const invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains("expected diag, band:K, topleft:K or full"));
    }
  }
}

TEST_CASE("parameter_count equals the number of entries in the pattern", "[refine][pattern]") {
  const yaqa::index r = 11;
  for (const sde_pattern p : {sde_pattern{sde_shape::diag, 0}, sde_pattern{sde_shape::band, 0},
                              sde_pattern{sde_shape::band, 3}, sde_pattern{sde_shape::band, 10},
                              sde_pattern{sde_shape::topleft, 1}, sde_pattern{sde_shape::topleft, 5},
                              sde_pattern{sde_shape::topleft, 11}, sde_pattern{sde_shape::full, 0}}) {
    INFO(to_string(p));
    yaqa::index count = 0;
    for (yaqa::index i = 0; i < r; ++i)
      for (yaqa::index j = 0; j < r; ++j) count += p.contains(i, j) ? 1 : 0;
    CHECK(p.parameter_count(r) == count);
    for (yaqa::index i = 0; i < r; ++i) CHECK(p.contains(i, i));  // every pattern holds the diagonal (LSI)
  }
}

TEST_CASE("patterns larger than the rank are rejected", "[refine][pattern]") {
  CHECK_THROWS_AS((sde_pattern{sde_shape::band, 8}.validate(8)), invalid_argument);
  CHECK_NOTHROW((sde_pattern{sde_shape::band, 7}.validate(8)));
  CHECK_THROWS_AS((sde_pattern{sde_shape::topleft, 9}.validate(8)), invalid_argument);
  CHECK_NOTHROW((sde_pattern{sde_shape::topleft, 8}.validate(8)));
  CHECK_THROWS_WITH((sde_pattern{sde_shape::topleft, 9}.validate(8, "ctx")), Catch::Contains("topleft:9") &&
                                                                                 Catch::Contains("rank = 8"));
}
