// File: tests/testing/status_matchers.h
//
// gmock matchers for absl::Status / StatusOr, shaped like absl's
// status_matchers.h (public from LTS 20240722; Debian ships 20220623):
//
//   EXPECT_THAT(ReadNpy(path), IsOk());
//   EXPECT_THAT(ReadNpy(path), StatusIs(absl::StatusCode::kInvalidArgument,
//                                       HasSubstr("offset 10")));
//   EXPECT_THAT(store.GetRun("a/b"), IsOkAndHolds(expected_run));
//   ASSERT_OK_AND_ASSIGN(auto file, ReadTensorFile(path));
#ifndef REPROD_TESTS_TESTING_STATUS_MATCHERS_H_
#define REPROD_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reprod::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) { return s.status(); }

MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::reprod::testing::GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s.ToString();
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::reprod::testing::GetStatus(arg);
  *result_listener << "status: " << s.ToString();
  if (s.code() != code) return false;
  return ::testing::Matches(message_matcher)(std::string(s.message()));
}

// An OK StatusOr whose value == `value`.
MATCHER_P(IsOkAndHolds, value, "is OK and holds the value") {
  if (!arg.ok()) {
    *result_listener << "status: " << arg.status().ToString();
    return false;
  }
  return *arg == value;
}

}  // namespace reprod::testing

#define REPROD_TESTING_CONCAT_INNER_(a, b) a##b
#define REPROD_TESTING_CONCAT_(a, b) REPROD_TESTING_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                                  \
  auto REPROD_TESTING_CONCAT_(statusor_, __LINE__) = (rexpr);             \
  ASSERT_TRUE(REPROD_TESTING_CONCAT_(statusor_, __LINE__).ok())           \
      << REPROD_TESTING_CONCAT_(statusor_, __LINE__).status().ToString(); \
  lhs = std::move(REPROD_TESTING_CONCAT_(statusor_, __LINE__)).value()

#endif  // REPROD_TESTS_TESTING_STATUS_MATCHERS_H_
