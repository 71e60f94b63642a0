#include "core/py_float.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace reprod::core {
namespace {

struct Case {
  double value;
  const char* repr;  // what CPython's repr(float) prints
};

TEST(PyFloatReprTest, MatchesPythonRepr) {
  const Case cases[] = {
      {1.30385160446167e-07, "1.30385160446167e-07"},
      {0.33387675881385803, "0.33387675881385803"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1e-06, "1e-06"},
      {1e-5, "1e-05"},
      {3.0e-5, "3e-05"},
      {0.0001, "0.0001"},
      {0.00012345, "0.00012345"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {9999999999999998.0, "9999999999999998.0"},
      {9007199254740992.0, "9007199254740992.0"},
      {123456789012345680.0, "1.2345678901234568e+17"},
      {1e22, "1e+22"},
      {1e100, "1e+100"},
      {123.0, "123.0"},
      {100.0, "100.0"},
      {1.0, "1.0"},
      {0.1, "0.1"},
      {0.3, "0.3"},
      {-2.5, "-2.5"},
      {12345.678, "12345.678"},
      {2.0 / 3.0, "0.6666666666666666"},
      {1.0 / 3.0, "0.3333333333333333"},
      {1.5e-10, "1.5e-10"},
      {-1e-300, "-1e-300"},
      {5e-324, "5e-324"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {1.7976931348623157e+308, "1.7976931348623157e+308"},
      {9.35605818719964e-06, "9.35605818719964e-06"},
      {1.3681476625617212e-05, "1.3681476625617212e-05"},
      {1.8924391285779562e-05, "1.8924391285779562e-05"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(PyFloatRepr(c.value), c.repr) << "value " << c.repr;
  }
}

TEST(PyFloatReprTest, NonFinite) {
  EXPECT_EQ(PyFloatRepr(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(PyFloatRepr(-std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(PyFloatRepr(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(PyFloatRepr(-std::numeric_limits<double>::infinity()), "-inf");
}

TEST(PyFloatReprTest, RoundTrips) {
  // Shortest digits must still parse back to the same double.
  double x = 1.0;
  for (int i = 0; i < 2000; ++i) {
    x = std::nextafter(x * 1.37, 1e300);
    const std::string s = PyFloatRepr(x);
    EXPECT_EQ(std::stod(s), x) << s;
    if (x > 1e200) x = 1e-200;
  }
}

}  // namespace
}  // namespace reprod::core
