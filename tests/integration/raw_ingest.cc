#include "tests/integration/raw_ingest.h"

#include <cstring>
#include <thread>

namespace reprod::testing {

std::string Float32Bytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::vector<v1::IngestRequest> IngestMessages(const std::string& run,
                                              uint64_t tensor_id,
                                              const RawTensor& t) {
  std::vector<v1::IngestRequest> out;
  v1::IngestRequest begin;
  v1::BeginTensor* b = begin.mutable_begin();
  b->set_run(run);
  b->set_tensor_id(tensor_id);
  v1::TensorHeader* h = b->mutable_header();
  h->mutable_address()->set_checkpoint(t.checkpoint);
  h->mutable_address()->set_key(t.key);
  if (t.step) h->mutable_address()->set_step(*t.step);
  h->mutable_address()->set_rank(t.rank);
  if (t.placement) *h->mutable_placement() = *t.placement;
  h->set_dtype(t.dtype);
  for (int64_t d : t.shape) h->add_shape(d);
  h->set_byte_length(t.byte_length.value_or(t.bytes.size()));
  h->set_crc32c(t.crc32c.value_or(Crc32c(t.bytes)));
  out.push_back(std::move(begin));
  for (size_t off = 0; off < t.bytes.size(); off += t.chunk_bytes) {
    v1::IngestRequest chunk;
    chunk.mutable_chunk()->set_offset(off);
    chunk.mutable_chunk()->set_data(t.bytes.substr(off, t.chunk_bytes));
    out.push_back(std::move(chunk));
  }
  return out;
}

IngestOutcome RunIngest(v1::IngestService::Stub& stub,
                        const std::vector<v1::IngestRequest>& messages) {
  grpc::ClientContext context;
  auto stream = stub.Ingest(&context);
  IngestOutcome outcome;
  // Read acks concurrently so a server that stops reading cannot deadlock us.
  std::thread reader([&] {
    v1::IngestResponse ack;
    while (stream->Read(&ack)) outcome.acks.push_back(ack);
  });
  for (const v1::IngestRequest& m : messages) {
    if (!stream->Write(m)) break;
  }
  stream->WritesDone();
  reader.join();
  outcome.status = stream->Finish();
  return outcome;
}

IngestOutcome PushTensors(v1::IngestService::Stub& stub, const std::string& run,
                          const std::vector<RawTensor>& tensors) {
  std::vector<v1::IngestRequest> messages;
  for (size_t i = 0; i < tensors.size(); ++i) {
    for (auto& m : IngestMessages(run, i, tensors[i])) {
      messages.push_back(std::move(m));
    }
  }
  return RunIngest(stub, messages);
}

}  // namespace reprod::testing
