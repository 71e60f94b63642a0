// A 2 GiB float32 tensor pair pushed through the real server and compared,
// while the server's peak RSS stays under a stated bound: the ingest path
// holds one chunk at a time and compare reads bounded windows, so memory
// does not grow with tensor size.
#include <cstring>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reprod/v1/compare.grpc.pb.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "reprod/v1/runs.grpc.pb.h"
#include "tests/integration/server_process.h"
#include "tests/testing/status_matchers.h"

namespace reprod::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kBytes = uint64_t{2} << 30;  // 2 GiB
constexpr uint64_t kChunk = 1 << 20;
constexpr uint64_t kPeriod = 4096;  // elements before the pattern repeats
// The stated bound on the server's peak RSS for two 2 GiB tensors: less
// than a quarter of one tensor.
constexpr uint64_t kRssBound = uint64_t{512} << 20;

// One 1 MiB chunk of ref (i % 4096) * 0.25 or cand = ref + 0.5; every chunk
// of the tensor is the same because 1 MiB is a multiple of the period.
std::string Chunk(bool cand) {
  std::vector<float> v(kChunk / 4);
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(i % kPeriod) * 0.25f + (cand ? 0.5f : 0.0f);
  }
  std::string out(kChunk, '\0');
  std::memcpy(out.data(), v.data(), kChunk);
  return out;
}

grpc::Status PushLarge(v1::IngestService::Stub& stub, const std::string& run,
                       bool cand) {
  const std::string chunk = Chunk(cand);
  uint32_t crc = 0;
  for (uint64_t off = 0; off < kBytes; off += kChunk) {
    crc = Crc32cExtend(crc, chunk);
  }
  grpc::ClientContext ctx;
  auto stream = stub.Ingest(&ctx);
  v1::IngestRequest begin;
  begin.mutable_begin()->set_run(run);
  v1::TensorHeader* h = begin.mutable_begin()->mutable_header();
  h->mutable_address()->set_checkpoint("bp_align");
  h->mutable_address()->set_key("huge");
  h->set_dtype(v1::DTYPE_FLOAT32);
  h->add_shape(static_cast<int64_t>(kBytes / 4 / 1024));
  h->add_shape(1024);
  h->set_byte_length(kBytes);
  h->set_crc32c(crc);
  if (!stream->Write(begin)) return stream->Finish();
  v1::IngestRequest msg;
  for (uint64_t off = 0; off < kBytes; off += kChunk) {
    msg.mutable_chunk()->set_offset(off);
    msg.mutable_chunk()->set_data(chunk);
    if (!stream->Write(msg)) break;
  }
  stream->WritesDone();
  v1::IngestResponse ack;
  const bool got_ack = stream->Read(&ack);
  grpc::Status s = stream->Finish();
  if (s.ok() && !got_ack) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "no ack");
  }
  return s;
}

TEST(LargeTensor, TwoGiBPairPushedAndComparedInBoundedMemory) {
  TempDir tmp;
  ServerProcess server(ServerOptionsFor(tmp.path() + "/data"));
  ASSERT_THAT(server.Start(), IsOk());
  auto channel = server.Channel();
  auto runs = v1::RunService::NewStub(channel);
  auto ingest = v1::IngestService::NewStub(channel);
  auto compare = v1::CompareService::NewStub(channel);
  for (const char* name : {"big/ref", "big/cand"}) {
    grpc::ClientContext ctx;
    v1::CreateRunRequest req;
    req.mutable_run()->set_name(name);
    v1::Run run;
    ASSERT_TRUE(runs->CreateRun(&ctx, req, &run).ok());
  }
  grpc::Status s = PushLarge(*ingest, "big/ref", false);
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = PushLarge(*ingest, "big/cand", true);
  ASSERT_TRUE(s.ok()) << s.error_message();

  grpc::ClientContext ctx;
  v1::CompareRequest req;
  req.set_ref("big/ref");
  req.set_cand("big/cand");
  req.set_format(v1::REPORT_FORMAT_JSON);
  v1::Report report;
  s = compare->Compare(&ctx, req, &report);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // Every element differs by exactly 0.5: mean_abs 0.5 > 1e-6 fails, the
  // largest error is the first element (ties pick the smallest index).
  EXPECT_FALSE(report.passed());
  EXPECT_THAT(report.rendered(), HasSubstr("\"count\": 536870912"));
  EXPECT_THAT(report.rendered(), HasSubstr("\"mean_abs\": 0.5,"));
  EXPECT_THAT(report.rendered(), HasSubstr("\"max_abs\": 0.5,"));

  absl::StatusOr<uint64_t> rss = server.PeakRssBytes();
  ASSERT_THAT(rss, IsOk());
  std::printf("server peak RSS after pushing and comparing 2 x 2 GiB: %.1f MiB "
              "(bound %.0f MiB)\n",
              static_cast<double>(*rss) / (1 << 20),
              static_cast<double>(kRssBound) / (1 << 20));
  EXPECT_LT(*rss, kRssBound);
  ASSERT_THAT(server.Terminate(), IsOk());
}

}  // namespace
}  // namespace reprod::testing
