// File: formats/internal/py_literal.h
//
// A parser for the tiny subset of Python literals that .npy headers use:
// dicts, tuples, lists, str ('...' or "..."), int (optionally with a Python 2
// 'L' suffix), True, False, None. Nothing is evaluated. Nesting is bounded.
//
// Thread-safety: pure functions.
#ifndef REPROD_FORMATS_INTERNAL_PY_LITERAL_H_
#define REPROD_FORMATS_INTERNAL_PY_LITERAL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace reprod::formats::internal {

struct PyLiteral {
  enum class Kind { kNone, kBool, kInt, kStr, kTuple, kList, kDict };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  std::string s;
  std::vector<PyLiteral> items;  // tuple, list; dict: k0, v0, k1, v1, ...

  // Dict lookup by str key; nullptr when absent or not a dict.
  const PyLiteral* Find(std::string_view key) const;
};

// Parses `text` (surrounding whitespace allowed). InvalidArgument with the
// offset of the problem on malformed or unsupported input; integers outside
// int64 are refused.
absl::StatusOr<PyLiteral> ParsePyLiteral(std::string_view text);

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_PY_LITERAL_H_
