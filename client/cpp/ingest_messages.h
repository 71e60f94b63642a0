// File: client/cpp/ingest_messages.h
//
// The one chunking implementation: how a tensor becomes IngestRequest
// messages on the wire (proto/reprod/v1/ingest.proto): a BeginTensor with the
// header (address, dtype, shape, byte length, crc32c of all the bytes), then
// TensorChunk messages of at most `chunk_bytes` each, at increasing offsets,
// whose data concatenated are the tensor's bytes. A tensor of 0 bytes has no
// chunks (the server completes it on BeginTensor).
//
//   v1::IngestRequest begin;
//   MakeBeginTensor(run, id, item, Crc32c(bytes, n), &begin);
//   TensorChunker chunks(bytes, n, kDefaultChunkBytes);
//   v1::IngestRequest chunk;
//   while (chunks.Next(&chunk)) stream->Write(chunk);
//   // or, without copying the bytes (a stream of grpc::ByteBuffer):
//   grpc::ByteBuffer wire; uint64_t n;
//   while (chunks.NextWire(&wire, &n)) raw_stream->Write(wire);
//
// Thread-safety: MakeBeginTensor is pure; a TensorChunker is used by one
// thread at a time.
#ifndef REPROD_CLIENT_CPP_INGEST_MESSAGES_H_
#define REPROD_CLIENT_CPP_INGEST_MESSAGES_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include <grpcpp/support/byte_buffer.h>

#include "client/cpp/tensor_source.h"
#include "reprod/v1/ingest.pb.h"

namespace reprod::client {

// The server's default chunk limit (1 MiB).
inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;

// Fills `out` with the BeginTensor of `item` for `run`: address (rank
// included), dtype, shape, placement (absent for kNone), byte_length =
// item.tensor.num_bytes() and the given crc32c (of all
// those bytes; the caller computes it once and keeps it for resends).
void MakeBeginTensor(const std::string& run, uint64_t tensor_id, const PushItem& item,
                     uint32_t crc32c, v1::IngestRequest* out);

// crc32c of the tensor's bytes (common/crc32c.h).
uint32_t TensorCrc32c(const Tensor& tensor);

// reprod::client::TensorChunker — cuts [data, data + size) into chunks.
// The bytes must stay alive while the chunker is used.
class TensorChunker {
 public:
  // chunk_bytes == 0 is treated as kDefaultChunkBytes.
  TensorChunker(const void* data, uint64_t size, size_t chunk_bytes);

  // Fills `out` with the next TensorChunk (offset, data copied from the
  // bytes) and returns true; false once every byte was produced.
  bool Next(v1::IngestRequest* out);

  // The same next chunk as an encoded IngestRequest whose data is not
  // copied: a small slice with the field tags, offset and length, then a
  // slice pointing at the bytes themselves. The bytes must stay alive and
  // unchanged until gRPC is done with the message (for a Push: until the
  // call finishes or the tensor is acknowledged). Sets *n to the chunk's
  // data bytes.
  bool NextWire(grpc::ByteBuffer* out, uint64_t* n);

  // Number of chunks the whole tensor takes: ceil(size / chunk_bytes).
  uint64_t num_chunks() const;
  // Bytes produced so far.
  uint64_t offset() const { return offset_; }

 private:
  const char* data_;
  uint64_t size_;
  size_t chunk_bytes_;
  uint64_t offset_ = 0;
};

}  // namespace reprod::client

#endif  // REPROD_CLIENT_CPP_INGEST_MESSAGES_H_
