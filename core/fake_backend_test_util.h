// File: core/fake_backend_test_util.h
//
// Test-only: a naive kernels::Backend (one loop over DiffStats::Add per
// pair) that records how it was called, so core's tests do not depend on
// the production backends. Not part of the core library.
#ifndef REPROD_CORE_FAKE_BACKEND_TEST_UTIL_H_
#define REPROD_CORE_FAKE_BACKEND_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/element.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace reprod::core::testing {

inline double ElementAt(const TensorView& v, int64_t i) {
  return LoadElementAsDouble(v.dtype, v.data, i);
}

class FakeBackend : public kernels::Backend {
 public:
  std::string_view name() const override { return "fake"; }

  absl::StatusOr<kernels::DiffStats> Compare(
      const kernels::DiffTask& task) override {
    kernels::DiffStats s;
    const int64_t n = task.ref.num_elements();
    if (n != task.cand.num_elements()) {
      return absl::InvalidArgumentError("element counts differ");
    }
    if (task.transpose_cand) {
      const int64_t rows = task.ref.shape[0], cols = task.ref.shape[1];
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          s.Add(ElementAt(task.ref, i * cols + j),
                ElementAt(task.cand, j * rows + i),
                task.index_base + static_cast<uint64_t>(i * cols + j),
                task.options);
        }
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        s.Add(ElementAt(task.ref, i), ElementAt(task.cand, i),
              task.index_base + static_cast<uint64_t>(i), task.options);
      }
    }
    return s;
  }

  absl::Status CompareBatch(absl::Span<const kernels::DiffTask> tasks,
                            absl::Span<kernels::DiffStats> out) override {
    ++batch_calls;
    tasks_seen.insert(tasks_seen.end(), tasks.begin(), tasks.end());
    if (fail_with) return *fail_with;
    for (size_t i = 0; i < tasks.size(); ++i) {
      absl::StatusOr<kernels::DiffStats> s = Compare(tasks[i]);
      if (!s.ok()) return s.status();
      out[i] = *s;
    }
    return absl::OkStatus();
  }

  int batch_calls = 0;
  std::vector<kernels::DiffTask> tasks_seen;
  std::optional<absl::Status> fail_with;
};

}  // namespace reprod::core::testing

#endif  // REPROD_CORE_FAKE_BACKEND_TEST_UTIL_H_
