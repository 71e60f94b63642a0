// File: formats/internal/unpickler.h
//
// The restricted unpickler behind formats/pickle.h (internal API).
//
// UnpickleAndFlatten interprets a pickle (protocols 0-5, the opcodes numpy and
// paddle.save emit) without executing anything: GLOBAL / STACK_GLOBAL resolve
// only an allowlist of callables (numpy array/dtype/scalar reconstruction,
// _codecs.encode for latin-1, collections.OrderedDict and the builtins
// tuple/list/bytes/bytearray), each modelled by a pure C++ function. Every
// other global is refused with PermissionDenied naming it. The resulting
// object graph is flattened into named tensors (see pickle.h for the rules).
//
// Thread-safety: reentrant; no shared state.
#ifndef REPROD_FORMATS_INTERNAL_UNPICKLER_H_
#define REPROD_FORMATS_INTERNAL_UNPICKLER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "formats/internal/array.h"
#include "formats/tensor_file.h"

namespace reprod::formats::internal {

// Bounds on the interpreter, all checked before the memory is used.
struct PickleLimits {
  size_t max_stack = size_t{1} << 22;    // stack entries
  size_t max_marks = size_t{1} << 20;    // open MARKs
  size_t max_objects = size_t{1} << 23;  // objects created (~128 B each)
  size_t max_memo = size_t{1} << 23;     // memo entries
  int max_nesting = 64;                  // container depth when flattening
  uint64_t max_key_bytes = uint64_t{1} << 28;  // sum of flattened key lengths
};

// Unpickles `input` and appends its leaves to `out->tensors` / `out->skipped`
// with keys under `key_prefix` ("" = top level; a bare array at the top level
// gets the key "output"). The caller has called budget->AllowCopies for the
// bytes containing the pickle.
//
// Errors: PermissionDenied (a global outside the allowlist), DataLoss
// (truncated), InvalidArgument (malformed or unsupported opcodes, out-of-band
// buffers, persistent ids), ResourceExhausted (limits or budget).
absl::Status UnpickleAndFlatten(const ByteSource& input,
                                const std::string& key_prefix,
                                ReadBudget* budget, TensorFile* out,
                                const PickleLimits& limits = {});

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_UNPICKLER_H_
