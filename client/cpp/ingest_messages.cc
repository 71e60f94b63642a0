#include "client/cpp/ingest_messages.h"

#include <algorithm>
#include <string>

#include "common/crc32c.h"
#include "common/placement.h"
#include "proto/wire.h"

namespace reprod::client {

void MakeBeginTensor(const std::string& run, uint64_t tensor_id, const PushItem& item,
                     uint32_t crc32c, v1::IngestRequest* out) {
  out->Clear();
  v1::BeginTensor* begin = out->mutable_begin();
  begin->set_run(run);
  begin->set_tensor_id(tensor_id);
  v1::TensorHeader* header = begin->mutable_header();
  v1::TensorAddress* address = header->mutable_address();
  address->set_checkpoint(item.checkpoint);
  address->set_key(item.key);
  if (item.step.has_value()) address->set_step(*item.step);
  address->set_rank(item.rank);
  header->set_dtype(wire::DTypeToWire(item.tensor.dtype()));
  for (int64_t d : item.tensor.shape()) header->add_shape(d);
  header->set_byte_length(item.tensor.num_bytes());
  header->set_crc32c(crc32c);
  if (item.placement.kind != PlacementKind::kNone) {
    wire::PlacementToWire(item.placement, header->mutable_placement());
  }
}

uint32_t TensorCrc32c(const Tensor& tensor) {
  if (tensor.num_bytes() == 0) return Crc32c(nullptr, 0);
  return Crc32c(tensor.data(), tensor.num_bytes());
}

TensorChunker::TensorChunker(const void* data, uint64_t size, size_t chunk_bytes)
    : data_(static_cast<const char*>(data)),
      size_(size),
      chunk_bytes_(chunk_bytes == 0 ? kDefaultChunkBytes : chunk_bytes) {}

bool TensorChunker::Next(v1::IngestRequest* out) {
  if (offset_ >= size_) return false;
  const uint64_t n = std::min<uint64_t>(chunk_bytes_, size_ - offset_);
  out->Clear();
  v1::TensorChunk* chunk = out->mutable_chunk();
  chunk->set_offset(offset_);
  chunk->set_data(data_ + offset_, n);
  offset_ += n;
  return true;
}

namespace {

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

}  // namespace

bool TensorChunker::NextWire(grpc::ByteBuffer* out, uint64_t* n) {
  if (offset_ >= size_) return false;
  *n = std::min<uint64_t>(chunk_bytes_, size_ - offset_);
  // IngestRequest{chunk (field 2): TensorChunk{offset (1, varint, omitted
  // when 0 as proto3 does), data (2, bytes)}}.
  const uint64_t inner = (offset_ == 0 ? 0 : 1 + VarintSize(offset_)) + 1 + VarintSize(*n) + *n;
  std::string head;
  head.push_back(0x12);
  PutVarint(inner, &head);
  if (offset_ != 0) {
    head.push_back(0x08);
    PutVarint(offset_, &head);
  }
  head.push_back(0x12);
  PutVarint(*n, &head);
  grpc::Slice slices[2] = {grpc::Slice(head),
                           grpc::Slice(data_ + offset_, *n, grpc::Slice::STATIC_SLICE)};
  *out = grpc::ByteBuffer(slices, 2);
  offset_ += *n;
  return true;
}

uint64_t TensorChunker::num_chunks() const { return (size_ + chunk_bytes_ - 1) / chunk_bytes_; }

}  // namespace reprod::client
