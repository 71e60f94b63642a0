// File: client/cpp/tensor_source.h
//
// What RemoteClient::Push sends: a pull-style stream of addressed tensors,
// so that a push of many large files holds only the tensors in flight (the
// ones not yet acknowledged by the server) rather than every file at once.
//
//   std::vector<PushItem> items;
//   items.push_back({"forward", "logits", std::nullopt, logits});
//   VectorTensorSource source(std::move(items));
//   absl::StatusOr<PushSummary> done = client->Push("team42/bert-paddle", source);
//
// Thread-safety: a TensorSource is used by one thread at a time (Push calls
// it from the calling thread only).
#ifndef REPROD_CLIENT_CPP_TENSOR_SOURCE_H_
#define REPROD_CLIENT_CPP_TENSOR_SOURCE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/placement.h"
#include "common/tensor.h"

namespace reprod::client {

// reprod::client::PushItem — one tensor and its address inside a run. The
// Tensor keeps its bytes alive (a copy shares them), so Push may hold it
// until the server acknowledges it and resend it after a reconnect.
struct PushItem {
  std::string checkpoint;       // "forward", "bp_align", ...
  std::string key;              // "/"-path, "encoder/layer0/weight"
  std::optional<int64_t> step;  // training step, when the key repeats
  Tensor tensor;
  uint32_t rank = 0;             // the logging process (common/placement.h)
  Placement placement = {};      // how the tensor is a piece of a global one
};

// reprod::client::TensorSource — produces the tensors of one push in order.
class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The next tensor, or nullopt once all were returned. An error ends the
  // push: Push stops sending, waits for the acks of what it already sent,
  // and returns this error (tensors acked before it stay stored).
  virtual absl::StatusOr<std::optional<PushItem>> Next() = 0;

  // Bytes of all tensors when known (progress display), else 0. May grow as
  // the source learns more (a file source estimates from file sizes).
  virtual uint64_t TotalBytes() const { return 0; }
};

// reprod::client::VectorTensorSource — tensors already in memory.
class VectorTensorSource final : public TensorSource {
 public:
  explicit VectorTensorSource(std::vector<PushItem> items);

  absl::StatusOr<std::optional<PushItem>> Next() override;
  uint64_t TotalBytes() const override { return total_bytes_; }

 private:
  std::vector<PushItem> items_;
  size_t next_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_TENSOR_SOURCE_H_
