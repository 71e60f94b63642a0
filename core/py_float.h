// File: core/py_float.h
//
// Formatting doubles exactly as Python's `repr(float)` does, so that reports
// in reprod_log's text format (and JSON numbers) are byte-identical to what
// the Python incumbent prints:
//
//   PyFloatRepr(1.30385160446167e-07) == "1.30385160446167e-07"
//   PyFloatRepr(0.5)                  == "0.5"
//   PyFloatRepr(123.0)                == "123.0"
//   PyFloatRepr(1e16)                 == "1e+16"
//   PyFloatRepr(NaN)                  == "nan"
//
// Rules (CPython's float_repr_style "short"): the shortest digit string that
// round-trips to the same double; with e the decimal exponent of the first
// digit, fixed notation when -4 <= e < 16 (always with a fractional part,
// ".0" when the value is integral), else scientific "d[.ddd]e±XX" with at
// least two exponent digits. Negative zero prints "-0.0"; non-finite values
// print "nan", "inf", "-inf".
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_PY_FLOAT_H_
#define REPROD_CORE_PY_FLOAT_H_

#include <string>

namespace reprod::core {

// Python `repr(x)` of a float. Never fails.
std::string PyFloatRepr(double x);

}  // namespace reprod::core

#endif  // REPROD_CORE_PY_FLOAT_H_
