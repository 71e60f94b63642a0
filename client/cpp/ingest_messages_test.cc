#include "client/cpp/ingest_messages.h"

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/placement.h"
#include "gtest/gtest.h"

namespace reprod::client {
namespace {

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) & 0xff);
  return s;
}

class TensorChunkerSizes : public ::testing::TestWithParam<size_t> {};

TEST_P(TensorChunkerSizes, ChunksAreBoundedContiguousAndReassemble) {
  constexpr size_t kChunk = 1000;
  const std::string data = Bytes(GetParam());
  TensorChunker chunker(data.data(), data.size(), kChunk);
  std::string joined;
  uint64_t chunks = 0;
  v1::IngestRequest request;
  while (chunker.Next(&request)) {
    ASSERT_TRUE(request.has_chunk());
    EXPECT_EQ(request.chunk().offset(), joined.size());
    EXPECT_LE(request.chunk().data().size(), kChunk);
    EXPECT_GT(request.chunk().data().size(), 0u);
    joined += request.chunk().data();
    ++chunks;
  }
  EXPECT_EQ(joined, data);
  EXPECT_EQ(chunks, chunker.num_chunks());
  EXPECT_EQ(chunks, (data.size() + kChunk - 1) / kChunk);
  EXPECT_FALSE(chunker.Next(&request));  // stays exhausted
}

// NextWire's bytes parse (protobuf, the oracle) to exactly what Next gives,
// and the data slice points into the tensor's own bytes.
TEST_P(TensorChunkerSizes, WireChunksAreNextsMessagesWithoutACopy) {
  const std::string data = Bytes(GetParam());
  for (size_t chunk : {size_t{1000}, size_t{300}, size_t{1} << 20}) {
    TensorChunker copied(data.data(), data.size(), chunk);
    TensorChunker wire(data.data(), data.size(), chunk);
    v1::IngestRequest expected;
    grpc::ByteBuffer buffer;
    uint64_t n = 0;
    while (copied.Next(&expected)) {
      ASSERT_TRUE(wire.NextWire(&buffer, &n));
      std::vector<grpc::Slice> slices;
      ASSERT_TRUE(buffer.Dump(&slices).ok());
      std::string bytes;
      for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      v1::IngestRequest parsed;
      ASSERT_TRUE(parsed.ParseFromString(bytes));
      EXPECT_EQ(parsed.SerializeAsString(), expected.SerializeAsString());
      EXPECT_EQ(bytes, expected.SerializeAsString());  // the canonical encoding
      EXPECT_EQ(n, expected.chunk().data().size());
      ASSERT_EQ(slices.size(), 2u);
      EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()),
                data.data() + expected.chunk().offset());
    }
    EXPECT_FALSE(wire.NextWire(&buffer, &n));
  }
}

INSTANTIATE_TEST_SUITE_P(EdgeSizes, TensorChunkerSizes,
                         ::testing::Values(0, 1, 999, 1000, 1001, 3005, 10000));

TEST(TensorChunker, DefaultChunkIsOneMiB) {
  const std::string data = Bytes((size_t{1} << 20) + 1);
  TensorChunker chunker(data.data(), data.size(), 0);
  v1::IngestRequest request;
  ASSERT_TRUE(chunker.Next(&request));
  EXPECT_EQ(request.chunk().data().size(), kDefaultChunkBytes);
  ASSERT_TRUE(chunker.Next(&request));
  EXPECT_EQ(request.chunk().data().size(), 1u);
  EXPECT_EQ(request.chunk().offset(), kDefaultChunkBytes);
}

TEST(MakeBeginTensor, FillsHeaderFromTheTensor) {
  auto t = Tensor::Allocate(DType::kFloat16, {2, 3});
  ASSERT_TRUE(t.ok());
  std::memset(t->mutable_data(), 0x3c, t->num_bytes());
  PushItem item{"bp_align", "encoder/w", 7, *t};
  const uint32_t crc = TensorCrc32c(item.tensor);
  EXPECT_EQ(crc, Crc32c(t->data(), 12));
  v1::IngestRequest request;
  MakeBeginTensor("team/run", 42, item, crc, &request);
  ASSERT_TRUE(request.has_begin());
  const v1::BeginTensor& b = request.begin();
  EXPECT_EQ(b.run(), "team/run");
  EXPECT_EQ(b.tensor_id(), 42u);
  EXPECT_EQ(b.header().address().checkpoint(), "bp_align");
  EXPECT_EQ(b.header().address().key(), "encoder/w");
  ASSERT_TRUE(b.header().address().has_step());
  EXPECT_EQ(b.header().address().step(), 7);
  EXPECT_EQ(b.header().dtype(), v1::DTYPE_FLOAT16);
  ASSERT_EQ(b.header().shape_size(), 2);
  EXPECT_EQ(b.header().shape(0), 2);
  EXPECT_EQ(b.header().shape(1), 3);
  EXPECT_EQ(b.header().byte_length(), 12u);
  EXPECT_EQ(b.header().crc32c(), crc);
}

TEST(MakeBeginTensor, NoStepAndScalarAndEmpty) {
  auto scalar = Tensor::Allocate(DType::kFloat64, {});
  auto empty = Tensor::Allocate(DType::kInt32, {0, 4});
  ASSERT_TRUE(scalar.ok() && empty.ok());
  v1::IngestRequest request;
  MakeBeginTensor("a/b", 0, PushItem{"loss", "loss", std::nullopt, *scalar}, 0, &request);
  EXPECT_FALSE(request.begin().header().address().has_step());
  EXPECT_EQ(request.begin().header().shape_size(), 0);
  EXPECT_EQ(request.begin().header().byte_length(), 8u);
  MakeBeginTensor("a/b", 1, PushItem{"loss", "e", std::nullopt, *empty}, 0, &request);
  EXPECT_EQ(request.begin().header().byte_length(), 0u);
  EXPECT_EQ(TensorCrc32c(*empty), 0u);
  // Rank 0 and no placement leave both fields off the wire.
  EXPECT_EQ(request.begin().header().address().rank(), 0u);
  EXPECT_FALSE(request.begin().header().has_placement());
}

TEST(MakeBeginTensor, CarriesRankAndPlacement) {
  auto piece = Tensor::Allocate(DType::kFloat32, {4, 3});
  ASSERT_TRUE(piece.ok());
  PushItem item{"forward", "logits", 2, *piece};
  item.rank = 1;
  item.placement = Placement::Shard(0, {8, 3}, {4, 0});
  v1::IngestRequest request;
  MakeBeginTensor("a/b", 0, item, 0, &request);
  const v1::TensorHeader& h = request.begin().header();
  EXPECT_EQ(h.address().rank(), 1u);
  EXPECT_EQ(h.placement().kind(), v1::Placement::KIND_SHARD);
  EXPECT_EQ(h.placement().dim(), 0);
  ASSERT_EQ(h.placement().global_shape_size(), 2);
  EXPECT_EQ(h.placement().global_shape(0), 8);
  EXPECT_EQ(h.placement().global_shape(1), 3);
  ASSERT_EQ(h.placement().offset_size(), 2);
  EXPECT_EQ(h.placement().offset(0), 4);
  EXPECT_EQ(h.placement().offset(1), 0);
  item.placement = Placement::Replicate();
  MakeBeginTensor("a/b", 1, item, 0, &request);
  EXPECT_EQ(request.begin().header().placement().kind(), v1::Placement::KIND_REPLICATE);
  EXPECT_EQ(request.begin().header().placement().global_shape_size(), 0);
}

}  // namespace
}  // namespace reprod::client
