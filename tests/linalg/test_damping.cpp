#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include <yaqa/linalg/damping.hpp>

using namespace yaqa;

TEST_CASE("damping_schedule: YAQA's accumulating ladder, then the growing floor", "[linalg][damping]") {
  const double mu = 2.5, dmax = 40.0;
  const std::vector<double> s = damping_schedule(mu, dmax, {});
  REQUIRE(s.size() == 26u);  // 20 ladder steps + 6 floor steps
  for (int k = 1; k <= 20; ++k) CHECK(s[k - 1] == Approx(k * 0.01 * mu).epsilon(1e-15));
  const double last = 20 * 0.01 * mu;
  double floor = 1e-6 * dmax;
  for (int f = 0; f < 6; ++f, floor *= 10) CHECK(s[20 + f] == Approx(last + floor).epsilon(1e-15));
  for (std::size_t i = 1; i < s.size(); ++i) CHECK(s[i] > s[i - 1]);
}

TEST_CASE("damping_schedule: GPTQModel-like increments stop before a relative damp of 1", "[linalg][damping]") {
  damping_options o;
  o.accumulate = false;
  o.sigma = 0.05;  // GPTQModel's default damp_percent
  o.max_steps = 4;
  o.floor_steps = 0;
  const std::vector<double> s = damping_schedule(1.0, 1.0, o);
  REQUIRE(s.size() == 4u);
  CHECK(s[0] == Approx(0.05));
  CHECK(s[1] == Approx(0.06));
  CHECK(s[3] == Approx(0.08));

  o.sigma = 0.955;
  o.max_steps = 100;
  const std::vector<double> t = damping_schedule(3.0, 1.0, o);
  REQUIRE(t.size() == 5u);  // 0.955 .. 0.995; 1.005 is past GPTQModel's `damp < 1` bound
  CHECK(t.back() == Approx(0.995 * 3.0));
}

TEST_CASE("damping_schedule skips floors that add nothing and validates its options", "[linalg][damping]") {
  damping_options o;
  o.max_steps = 3;
  const std::vector<double> s = damping_schedule(1.0, 0.0, o);  // max|diag| 0: no floor possible
  CHECK(s.size() == 3u);

  auto msg = [](damping_options bad) {
    try {
      damping_schedule(1.0, 1.0, bad);
    } catch (const yaqa::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  damping_options bad;
  bad.sigma = 0;
  CHECK(msg(bad).find("'sigma'") != std::string::npos);
  bad = {};
  bad.sigma = std::numeric_limits<double>::quiet_NaN();
  CHECK(msg(bad).find("'sigma'") != std::string::npos);
  bad = {};
  bad.max_steps = 0;
  CHECK(msg(bad).find("'max_steps'") != std::string::npos);
  bad = {};
  bad.floor_steps = -1;
  CHECK(msg(bad).find("'floor_steps'") != std::string::npos);
}
