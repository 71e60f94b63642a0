#include "client/cpp/tensor_source.h"

#include <utility>

namespace reprod::client {

VectorTensorSource::VectorTensorSource(std::vector<PushItem> items) : items_(std::move(items)) {
  for (const PushItem& item : items_) total_bytes_ += item.tensor.num_bytes();
}

absl::StatusOr<std::optional<PushItem>> VectorTensorSource::Next() {
  if (next_ >= items_.size()) return std::optional<PushItem>();
  // Moved out: the source does not keep what Push now holds.
  return std::optional<PushItem>(std::move(items_[next_++]));
}

}  // namespace reprod::client
