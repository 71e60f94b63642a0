// File: tests/integration/raw_ingest.h
//
// Protocol-level helpers for integration tests: build IngestRequest messages
// by hand (so tests can send malformed ones) and run one Ingest stream to
// its end, collecting the acks and the final status.
#ifndef REPROD_TESTS_INTEGRATION_RAW_INGEST_H_
#define REPROD_TESTS_INTEGRATION_RAW_INGEST_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "reprod/v1/ingest.grpc.pb.h"

namespace reprod::testing {

// A tensor as the test sends it; header fields default to the truth about
// `bytes` and can be overridden to lie.
struct RawTensor {
  std::string checkpoint = "forward";
  std::string key = "logits";
  std::optional<int64_t> step;
  v1::DType dtype = v1::DTYPE_FLOAT32;
  std::vector<int64_t> shape;
  std::string bytes;
  std::optional<uint64_t> byte_length;  // default bytes.size()
  std::optional<uint32_t> crc32c;       // default Crc32c(bytes)
  size_t chunk_bytes = 1 << 20;
  uint32_t rank = 0;                    // address.rank (0: not sent)
  std::optional<v1::Placement> placement;  // header.placement when set
};

// float32 values as little-endian bytes.
std::string Float32Bytes(const std::vector<float>& values);

// BeginTensor + chunks for `t` into `run`.
std::vector<v1::IngestRequest> IngestMessages(const std::string& run,
                                              uint64_t tensor_id,
                                              const RawTensor& t);

struct IngestOutcome {
  std::vector<v1::IngestResponse> acks;
  grpc::Status status;
};

// Sends every message on one stream (writes done, then reads to the end).
IngestOutcome RunIngest(v1::IngestService::Stub& stub,
                        const std::vector<v1::IngestRequest>& messages);

// Pushes tensors into `run` on one stream, ids 0, 1, ...
IngestOutcome PushTensors(v1::IngestService::Stub& stub, const std::string& run,
                          const std::vector<RawTensor>& tensors);

}  // namespace reprod::testing

#endif  // REPROD_TESTS_INTEGRATION_RAW_INGEST_H_
