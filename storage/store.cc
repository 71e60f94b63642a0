#include "storage/store.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reprod::storage {

std::string_view RunStateName(RunState state) {
  switch (state) {
    case RunState::kOpen:
      return "open";
    case RunState::kSealed:
      return "sealed";
    case RunState::kAborted:
      return "aborted";
  }
  return "invalid";
}

std::string_view CommitKindName(CommitKind kind) {
  switch (kind) {
    case CommitKind::kStored:
      return "stored";
    case CommitKind::kAlreadyPresent:
      return "already_present";
    case CommitKind::kReplaced:
      return "replaced";
  }
  return "unknown";
}

std::string AddressToString(const TensorAddress& address) {
  std::string out = absl::StrCat(address.checkpoint, "/", address.key);
  if (address.step.has_value()) absl::StrAppend(&out, "@", *address.step);
  if (address.rank != 0) absl::StrAppend(&out, "#rank ", address.rank);
  return out;
}

}  // namespace reprod::storage
