// Integration tests: the real reprodd binary on an ephemeral loopback port
// with a temp RocksDB data dir, driven through the generated stubs.
// Expected numbers are computed by hand in each test (independent oracle).
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reprod/v1/compare.grpc.pb.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "reprod/v1/review.grpc.pb.h"
#include "reprod/v1/runs.grpc.pb.h"
#include "server/auth/audit_log.h"
#include "storage/rocksdb/internal/test_hooks.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "tests/integration/raw_ingest.h"
#include "tests/integration/server_process.h"
#include "tests/testing/status_matchers.h"

namespace reprod::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    server_ = std::make_unique<ServerProcess>(
        ServerOptionsFor(tmp_.path() + "/data"));
    ASSERT_THAT(server_->Start(), IsOk());
    Connect();
  }

  void Connect() {
    channel_ = server_->Channel();
    runs_ = v1::RunService::NewStub(channel_);
    ingest_ = v1::IngestService::NewStub(channel_);
    compare_ = v1::CompareService::NewStub(channel_);
    reports_ = v1::ReportService::NewStub(channel_);
  }

  void CreateRun(const std::string& name, bool overwrite = false) {
    grpc::ClientContext ctx;
    v1::CreateRunRequest req;
    req.mutable_run()->set_name(name);
    req.mutable_run()->set_framework("test");
    req.mutable_run()->set_overwrite(overwrite);
    v1::Run run;
    const grpc::Status s = runs_->CreateRun(&ctx, req, &run);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(run.state(), v1::RUN_STATE_OPEN);
  }

  v1::Run GetRun(const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetRunRequest req;
    req.set_name(name);
    v1::Run run;
    const grpc::Status s = runs_->GetRun(&ctx, req, &run);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return run;
  }

  void Seal(const std::string& name) {
    grpc::ClientContext ctx;
    v1::SealRunRequest req;
    req.set_name(name);
    v1::Run run;
    const grpc::Status s = runs_->SealRun(&ctx, req, &run);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  grpc::Status Compare(const std::string& ref, const std::string& cand,
                       v1::ReportFormat format, v1::Report* report) {
    grpc::ClientContext ctx;
    v1::CompareRequest req;
    req.set_ref(ref);
    req.set_cand(cand);
    req.set_format(format);
    return compare_->Compare(&ctx, req, report);
  }

  TempDir tmp_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::RunService::Stub> runs_;
  std::unique_ptr<v1::IngestService::Stub> ingest_;
  std::unique_ptr<v1::CompareService::Stub> compare_;
  std::unique_ptr<v1::ReportService::Stub> reports_;
};

RawTensor F32(const std::string& checkpoint, const std::string& key,
              std::vector<float> values, std::vector<int64_t> shape) {
  RawTensor t;
  t.checkpoint = checkpoint;
  t.key = key;
  t.shape = std::move(shape);
  t.bytes = Float32Bytes(values);
  return t;
}

TEST_F(ServerTest, PushCompareAndFetchReport) {
  CreateRun("it/torch");
  CreateRun("it/paddle");
  const std::vector<RawTensor> ref = {
      F32("forward", "logits", {1, 2, 3, 4}, {2, 2}),
      F32("loss", "loss", {0.5f}, {})};
  // logits differ by 0.5 at [1, 1]: mean_abs 0.125, max_abs 0.5.
  const std::vector<RawTensor> cand = {
      F32("forward", "logits", {1, 2, 3, 4.5f}, {2, 2}),
      F32("loss", "loss", {0.5f}, {})};
  IngestOutcome r = PushTensors(*ingest_, "it/torch", ref);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_THAT(r.acks, SizeIs(2));
  EXPECT_EQ(r.acks[0].kind(), v1::ACK_KIND_STORED);
  EXPECT_EQ(r.acks[0].sequence(), 0u);
  EXPECT_EQ(r.acks[1].sequence(), 1u);
  EXPECT_EQ(r.acks[1].tensor_id(), 1u);
  IngestOutcome c = PushTensors(*ingest_, "it/paddle", cand);
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_EQ(GetRun("it/paddle").tensor_count(), 2u);
  EXPECT_EQ(GetRun("it/paddle").total_bytes(), 20u);

  v1::Report report;
  grpc::Status s =
      Compare("it/torch", "it/paddle", v1::REPORT_FORMAT_JSON, &report);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(report.passed());
  EXPECT_EQ(report.summary().tensors(), 2u);
  EXPECT_EQ(report.summary().passed(), 1u);
  EXPECT_EQ(report.summary().failed(), 1u);
  EXPECT_EQ(report.first_failure().checkpoint(), "forward");
  EXPECT_EQ(report.first_failure().key(), "logits");
  EXPECT_THAT(report.id(), ::testing::StartsWith("rpt-"));
  EXPECT_THAT(report.rendered(), HasSubstr("\"schema\": \"reprod.report.v1\""));
  EXPECT_THAT(report.rendered(), HasSubstr("\"mean_abs\": 0.125"));
  EXPECT_THAT(report.rendered(), HasSubstr("\"max_abs_index\": [1, 1]"));

  // The stored report, in reprod_log's text format.
  grpc::ClientContext ctx;
  v1::GetReportRequest get;
  get.set_id(report.id());
  get.set_format(v1::REPORT_FORMAT_TEXT);
  v1::Report text;
  s = reports_->GetReport(&ctx, get, &text);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(text.rendered(),
              HasSubstr("mean diff: check passed: False, value: 0.125"));
  EXPECT_THAT(text.rendered(), HasSubstr("diff check failed"));

  grpc::ClientContext lctx;
  v1::ListReportsRequest list;
  list.set_run("it/paddle");
  v1::ListReportsResponse listed;
  s = reports_->ListReports(&lctx, list, &listed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_THAT(listed.reports(), SizeIs(1));
  EXPECT_EQ(listed.reports(0).id(), report.id());
  EXPECT_TRUE(listed.reports(0).rendered().empty());
}

TEST_F(ServerTest, IdenticalResendIsIdempotent) {
  CreateRun("it/a");
  const RawTensor t = F32("forward", "x", {1, 2, 3}, {3});
  IngestOutcome first = PushTensors(*ingest_, "it/a", {t});
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  IngestOutcome again = PushTensors(*ingest_, "it/a", {t, t});
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  ASSERT_THAT(again.acks, SizeIs(2));
  for (const auto& ack : again.acks) {
    EXPECT_EQ(ack.kind(), v1::ACK_KIND_ALREADY_PRESENT);
    EXPECT_EQ(ack.sequence(), first.acks[0].sequence());
  }
  EXPECT_EQ(GetRun("it/a").tensor_count(), 1u);
}

TEST_F(ServerTest, ConflictingBytesRejectedNamingTheAddress) {
  CreateRun("it/a");
  RawTensor t = F32("bp_align", "grad/w", {1, 2, 3}, {3});
  t.step = 3;
  ASSERT_TRUE(PushTensors(*ingest_, "it/a", {t}).status.ok());
  t.bytes = Float32Bytes({1, 2, 4});
  IngestOutcome o = PushTensors(*ingest_, "it/a", {t});
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(o.status.error_message(), HasSubstr("bp_align/grad/w@3"));
  EXPECT_THAT(o.acks, SizeIs(0));

  // A run opened with overwrite accepts it and says so.
  CreateRun("it/b", /*overwrite=*/true);
  t.bytes = Float32Bytes({1, 2, 3});
  ASSERT_TRUE(PushTensors(*ingest_, "it/b", {t}).status.ok());
  t.bytes = Float32Bytes({1, 2, 4});
  IngestOutcome replaced = PushTensors(*ingest_, "it/b", {t});
  ASSERT_TRUE(replaced.status.ok()) << replaced.status.error_message();
  ASSERT_THAT(replaced.acks, SizeIs(1));
  EXPECT_EQ(replaced.acks[0].kind(), v1::ACK_KIND_REPLACED);
}

struct BadCase {
  const char* name;
  std::function<void(RawTensor&, std::string& run)> mutate;
  const char* message;
};

TEST_F(ServerTest, InvalidHeadersRejectedWithInvalidArgument) {
  CreateRun("it/a");
  const std::vector<BadCase> cases = {
      {"dtype x shape != bytes",
       [](RawTensor& t, std::string&) { t.shape = {4}; },
       "does not match dtype float32 x shape (4,) = 16 bytes"},
      {"negative dimension",
       [](RawTensor& t, std::string&) { t.shape = {-3}; },
       "dimension 0 is negative"},
      {"bad key characters",
       [](RawTensor& t, std::string&) { t.key = "bad key!"; },
       "invalid tensor key"},
      {"bad checkpoint", [](RawTensor& t, std::string&) { t.checkpoint = ""; },
       "invalid checkpoint name"},
      {"unknown dtype",
       [](RawTensor& t, std::string&) { t.dtype = static_cast<v1::DType>(42); },
       "unknown dtype 42"},
      {"unknown run", [](RawTensor&, std::string& run) { run = "it/nope"; },
       "unknown run 'it/nope'"},
      {"chunk past the declared size",
       [](RawTensor& t, std::string&) {
         t.byte_length = 8;
         t.shape = {2};
       },
       "runs past the declared size 8"},
  };
  for (const BadCase& c : cases) {
    RawTensor t = F32("forward", "x", {1, 2, 3}, {3});
    std::string run = "it/a";
    c.mutate(t, run);
    IngestOutcome o = PushTensors(*ingest_, run, {t});
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << o.status.error_message();
    EXPECT_THAT(o.status.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(o.acks, SizeIs(0)) << c.name;
  }
  // A chunk at the wrong offset.
  RawTensor t = F32("forward", "x", {1, 2, 3}, {3});
  t.chunk_bytes = 4;
  auto messages = IngestMessages("it/a", 0, t);
  messages[2].mutable_chunk()->set_offset(5);
  IngestOutcome o = RunIngest(*ingest_, messages);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(o.status.error_message(), HasSubstr("expected offset 4"));
  // A crc32c that does not match the bytes.
  t.crc32c = Crc32c("something else");
  o = PushTensors(*ingest_, "it/a", {t});
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(o.status.error_message(), HasSubstr("crc32c"));
  // Nothing of the above became visible.
  EXPECT_EQ(GetRun("it/a").tensor_count(), 0u);
}

TEST_F(ServerTest, WatchReportsEachPairBeforeEitherRunIsSealed) {
  CreateRun("it/ref");
  CreateRun("it/cand");
  grpc::ClientContext ctx;
  v1::WatchRequest req;
  req.set_ref("it/ref");
  req.set_cand("it/cand");
  auto stream = compare_->Watch(&ctx, req);

  auto next_verdict = [&]() {
    v1::WatchEvent event;
    EXPECT_TRUE(stream->Read(&event));
    EXPECT_TRUE(event.has_verdict());
    return event.verdict();
  };
  for (int step = 0; step < 3; ++step) {
    RawTensor r = F32("train_align", "loss", {1.0f}, {});
    r.step = step;
    RawTensor c = r;
    // Step 2 diverges: |1.5 - 1| = 0.5.
    if (step == 2) c.bytes = Float32Bytes({1.5f});
    ASSERT_TRUE(PushTensors(*ingest_, "it/ref", {r}).status.ok());
    ASSERT_TRUE(PushTensors(*ingest_, "it/cand", {c}).status.ok());
    const v1::TensorVerdict v = next_verdict();
    EXPECT_EQ(v.address().step(), step);
    EXPECT_EQ(v.address().key(), "loss");
    EXPECT_EQ(v.status(), step == 2 ? v1::TENSOR_STATUS_FAIL
                                    : v1::TENSOR_STATUS_PASS);
    EXPECT_EQ(v.max_abs(), step == 2 ? 0.5 : 0.0);
    // Both runs are still open while the verdict arrives.
    EXPECT_EQ(GetRun("it/ref").state(), v1::RUN_STATE_OPEN);
    EXPECT_EQ(GetRun("it/cand").state(), v1::RUN_STATE_OPEN);
  }
  Seal("it/ref");
  Seal("it/cand");
  v1::WatchEvent last;
  ASSERT_TRUE(stream->Read(&last));
  ASSERT_TRUE(last.has_report());
  EXPECT_FALSE(last.report().passed());
  EXPECT_EQ(last.report().summary().tensors(), 3u);
  EXPECT_EQ(last.report().first_failure().step(), 2);
  EXPECT_FALSE(stream->Read(&last));
  const grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ServerTest, ReadTensorStreamsHeaderThenExactBytes) {
  CreateRun("it/a");
  // 2.5 MiB of distinct bytes at step 3, read back in 1 MiB chunks: three
  // chunks (1, 1, 0.5 MiB) whose concatenation is the pushed bytes.
  RawTensor t;
  t.checkpoint = "bp_align";
  t.key = "grad/w";
  t.step = 3;
  t.dtype = v1::DTYPE_UINT8;
  t.shape = {5, 512 * 1024};
  t.bytes.resize(5 * 512 * 1024);
  for (size_t i = 0; i < t.bytes.size(); ++i) {
    t.bytes[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  }
  ASSERT_TRUE(PushTensors(*ingest_, "it/a", {t}).status.ok());

  grpc::ClientContext ctx;
  v1::ReadTensorRequest req;
  req.set_run("it/a");
  req.mutable_address()->set_checkpoint("bp_align");
  req.mutable_address()->set_key("grad/w");
  req.mutable_address()->set_step(3);
  std::unique_ptr<grpc::ClientReader<v1::ReadTensorResponse>> reader =
      runs_->ReadTensor(&ctx, req);
  v1::ReadTensorResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_header());
  EXPECT_EQ(msg.header().dtype(), v1::DTYPE_UINT8);
  EXPECT_THAT(msg.header().shape(), ElementsAre(5, 512 * 1024));
  EXPECT_EQ(msg.header().byte_length(), t.bytes.size());
  EXPECT_EQ(msg.header().crc32c(), Crc32c(t.bytes));
  std::string got;
  int chunks = 0;
  while (reader->Read(&msg)) {
    ASSERT_TRUE(msg.has_chunk());
    EXPECT_EQ(msg.chunk().offset(), got.size());
    got += msg.chunk().data();
    ++chunks;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(chunks, 3);
  EXPECT_TRUE(got == t.bytes);

  // Another step is another address: NOT_FOUND naming it.
  grpc::ClientContext ctx2;
  req.mutable_address()->set_step(4);
  auto missing = runs_->ReadTensor(&ctx2, req);
  while (missing->Read(&msg)) {
  }
  const grpc::Status s = missing->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("grad/w"));
}

v1::Placement ShardOf(int32_t dim, std::vector<int64_t> global, std::vector<int64_t> offset) {
  v1::Placement p;
  p.set_kind(v1::Placement::KIND_SHARD);
  p.set_dim(dim);
  for (int64_t g : global) p.add_global_shape(g);
  for (int64_t o : offset) p.add_offset(o);
  return p;
}

v1::Placement Replicated() {
  v1::Placement p;
  p.set_kind(v1::Placement::KIND_REPLICATE);
  return p;
}

RawTensor Ranked(RawTensor t, std::optional<int64_t> step, uint32_t rank,
                 std::optional<v1::Placement> placement) {
  t.step = step;
  t.rank = rank;
  t.placement = std::move(placement);
  return t;
}

// Two ranks of a job: rows 0..1 and 2..3 of a 4 x 2 logits tensor at step 3
// (shards), and a weight both ranks hold whole (replicate).
std::vector<RawTensor> TwoRanks(std::vector<float> rank1_logits, std::vector<float> rank1_weight) {
  return {
      Ranked(F32("forward", "logits", {1, 2, 3, 4}, {2, 2}), 3, 0, ShardOf(0, {4, 2}, {0, 0})),
      Ranked(F32("forward", "logits", std::move(rank1_logits), {2, 2}), 3, 1,
             ShardOf(0, {4, 2}, {2, 0})),
      Ranked(F32("forward", "weight", {0.25f, -1}, {2}), std::nullopt, 0, Replicated()),
      Ranked(F32("forward", "weight", std::move(rank1_weight), {2}), std::nullopt, 1,
             Replicated()),
  };
}

// The same (checkpoint, key, step) at ranks 0 and 1 are two tensors: stored,
// acked, listed and read back with their ranks and placements, and compared
// rank to rank.
TEST_F(ServerTest, RanksAndPlacementsAreStoredListedAndCompared) {
  CreateRun("it/ref");
  CreateRun("it/cand");
  CreateRun("it/split");
  IngestOutcome r = PushTensors(*ingest_, "it/ref", TwoRanks({5, 6, 7, 8}, {0.25f, -1}));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_THAT(r.acks, SizeIs(4));
  EXPECT_EQ(r.acks[0].address().rank(), 0u);
  EXPECT_EQ(r.acks[1].address().rank(), 1u);
  EXPECT_EQ(r.acks[1].address().step(), 3);
  EXPECT_EQ(r.acks[1].kind(), v1::ACK_KIND_STORED);  // not rank 0's tensor
  // The candidate's rank 1 differs by 0.5 in its last element.
  ASSERT_TRUE(PushTensors(*ingest_, "it/cand", TwoRanks({5, 6, 7, 8.5f}, {0.25f, -1})).status.ok());
  // Another candidate whose ranks disagree on a replicated weight.
  ASSERT_TRUE(PushTensors(*ingest_, "it/split", TwoRanks({5, 6, 7, 8}, {0.25f, -2})).status.ok());
  EXPECT_EQ(GetRun("it/ref").tensor_count(), 4u);

  grpc::ClientContext list_ctx;
  v1::ListTensorsRequest list_req;
  list_req.set_run("it/ref");
  v1::ListTensorsResponse listed;
  ASSERT_TRUE(runs_->ListTensors(&list_ctx, list_req, &listed).ok());
  ASSERT_THAT(listed.tensors(), SizeIs(4));
  const v1::TensorHeader& rank1 = listed.tensors(1).header();
  EXPECT_EQ(rank1.address().key(), "logits");
  EXPECT_EQ(rank1.address().step(), 3);
  EXPECT_EQ(rank1.address().rank(), 1u);
  EXPECT_EQ(rank1.placement().kind(), v1::Placement::KIND_SHARD);
  EXPECT_EQ(rank1.placement().dim(), 0);
  EXPECT_THAT(rank1.placement().global_shape(), ElementsAre(4, 2));
  EXPECT_THAT(rank1.placement().offset(), ElementsAre(2, 0));
  EXPECT_EQ(listed.tensors(0).header().address().rank(), 0u);
  EXPECT_THAT(listed.tensors(0).header().placement().offset(), ElementsAre(0, 0));
  EXPECT_EQ(listed.tensors(3).header().address().rank(), 1u);
  EXPECT_EQ(listed.tensors(3).header().placement().kind(), v1::Placement::KIND_REPLICATE);
  EXPECT_THAT(listed.tensors(3).header().placement().global_shape(), SizeIs(0));

  // ReadTensor at rank 1 returns rank 1's bytes; rank 2 does not exist.
  grpc::ClientContext read_ctx;
  v1::ReadTensorRequest read_req;
  read_req.set_run("it/ref");
  read_req.mutable_address()->set_checkpoint("forward");
  read_req.mutable_address()->set_key("logits");
  read_req.mutable_address()->set_step(3);
  read_req.mutable_address()->set_rank(1);
  auto reader = runs_->ReadTensor(&read_ctx, read_req);
  v1::ReadTensorResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_header());
  EXPECT_EQ(msg.header().address().rank(), 1u);
  EXPECT_THAT(msg.header().placement().offset(), ElementsAre(2, 0));
  std::string got;
  while (reader->Read(&msg)) got += msg.chunk().data();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(got == Float32Bytes({5, 6, 7, 8}));
  grpc::ClientContext missing_ctx;
  read_req.mutable_address()->set_rank(2);
  auto missing = runs_->ReadTensor(&missing_ctx, read_req);
  while (missing->Read(&msg)) {
  }
  const grpc::Status not_found = missing->Finish();
  EXPECT_EQ(not_found.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(not_found.error_message(), HasSubstr("forward/logits@3#rank 2"));

  // Rank to rank: only rank 1's logits differ, so the first failure is there.
  v1::Report report;
  grpc::Status s = Compare("it/ref", "it/cand", v1::REPORT_FORMAT_JSON, &report);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(report.passed());
  ASSERT_TRUE(report.has_first_failure());
  EXPECT_EQ(report.first_failure().key(), "logits");
  EXPECT_EQ(report.first_failure().step(), 3);
  EXPECT_EQ(report.first_failure().rank(), 1u);
  EXPECT_THAT(report.rendered(), HasSubstr("\"global_tensors\""));
  // Identical runs pass; ranks that disagree on a replicated tensor fail,
  // which the server can only tell from the stored CRC-32Cs.
  s = Compare("it/ref", "it/ref", v1::REPORT_FORMAT_JSON, &report);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(report.passed()) << report.rendered();
  s = Compare("it/ref", "it/split", v1::REPORT_FORMAT_JSON, &report);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(report.passed());
  EXPECT_THAT(report.rendered(), HasSubstr("differs between rank 1 and rank 0"));
}

TEST_F(ServerTest, InvalidRanksAndPlacementsRejectedWithInvalidArgument) {
  CreateRun("it/a");
  const std::vector<BadCase> cases = {
      {"rank above the largest",
       [](RawTensor& t, std::string&) { t.rank = (1u << 20); },
       "invalid rank 1048576"},
      {"shard past its global shape",
       [](RawTensor& t, std::string&) {
         t.rank = 1;
         t.step = 3;
         t.placement = ShardOf(0, {4}, {2});  // rows 2..4 of 4
       },
       "run 'it/a' tensor forward/x@3#rank 1: invalid placement shard"},
      {"replicate with a dim",
       [](RawTensor& t, std::string&) {
         t.placement = Replicated();
         t.placement->set_dim(1);
       },
       "only a shard has a dim"},
      {"unknown placement kind",
       [](RawTensor& t, std::string&) {
         t.placement = v1::Placement();
         t.placement->set_kind(static_cast<v1::Placement::Kind>(9));
       },
       "unknown placement kind 9"},
  };
  for (const BadCase& c : cases) {
    RawTensor t = F32("forward", "x", {1, 2, 3}, {3});
    std::string run = "it/a";
    c.mutate(t, run);
    IngestOutcome o = PushTensors(*ingest_, run, {t});
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << o.status.error_message();
    EXPECT_THAT(o.status.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(o.acks, SizeIs(0)) << c.name;
  }
  EXPECT_EQ(GetRun("it/a").tensor_count(), 0u);
}

TEST_F(ServerTest, RunLifecycleErrors) {
  CreateRun("it/a");
  grpc::ClientContext c1;
  v1::CreateRunRequest dup;
  dup.mutable_run()->set_name("it/a");
  v1::Run run;
  EXPECT_EQ(runs_->CreateRun(&c1, dup, &run).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  grpc::ClientContext c2;
  dup.set_exist_ok(true);
  EXPECT_TRUE(runs_->CreateRun(&c2, dup, &run).ok());
  grpc::ClientContext c3;
  v1::GetRunRequest get;
  get.set_name("it/missing");
  EXPECT_EQ(runs_->GetRun(&c3, get, &run).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c4;
  get.set_name("no slash");
  EXPECT_EQ(runs_->GetRun(&c4, get, &run).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  Seal("it/a");
  // A sealed run takes no more tensors.
  IngestOutcome o =
      PushTensors(*ingest_, "it/a", {F32("forward", "x", {1}, {1})});
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // Compare against an unknown run names it.
  v1::Report report;
  grpc::Status s = Compare("it/a", "it/ghost", v1::REPORT_FORMAT_JSON, &report);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("it/ghost"));
  // Deleting removes the run and its tensors.
  grpc::ClientContext c5;
  v1::DeleteRunRequest del;
  del.set_name("it/a");
  v1::DeleteRunResponse deleted;
  EXPECT_TRUE(runs_->DeleteRun(&c5, del, &deleted).ok());
  grpc::ClientContext c6;
  get.set_name("it/a");
  EXPECT_EQ(runs_->GetRun(&c6, get, &run).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, SigtermStopsCleanlyAndDataSurvivesRestart) {
  CreateRun("it/a");
  ASSERT_TRUE(PushTensors(*ingest_, "it/a",
                          {F32("forward", "x", {1, 2, 3}, {3}),
                           F32("forward", "y", {4}, {1})})
                  .status.ok());
  absl::StatusOr<int> status = server_->Terminate();
  ASSERT_THAT(status, IsOk());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  EXPECT_THAT(server_->ReadLog(), HasSubstr("reprodd stopped cleanly"));
  ASSERT_THAT(server_->Start(), IsOk());
  Connect();
  const v1::Run run = GetRun("it/a");
  EXPECT_EQ(run.tensor_count(), 2u);
  EXPECT_EQ(run.total_bytes(), 16u);
}

// The audit log over the wire with the data tampered with while reprodd is
// stopped: VerifyAudit names the first bad record, then (record restored)
// the signed run whose stored bytes were flipped.
TEST_F(ServerTest, VerifyAuditNamesTamperedRecordsAndSignedRuns) {
  CreateRun("it/ref");
  CreateRun("it/cand");
  for (const char* run : {"it/ref", "it/cand"}) {
    ASSERT_TRUE(PushTensors(*ingest_, run, {F32("forward", "x", {1, 2, 3}, {3})}).status.ok());
    Seal(run);
  }
  v1::Report report;
  ASSERT_TRUE(Compare("it/ref", "it/cand", v1::REPORT_FORMAT_JSON, &report).ok());
  {
    grpc::ClientContext ctx;
    v1::SignReportRequest req;
    req.set_id(report.id());
    v1::Report signed_report;
    const grpc::Status s = reports_->SignReport(&ctx, req, &signed_report);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_THAT(signed_report.signatures(), SizeIs(1));
    EXPECT_EQ(signed_report.signatures(0).signer_label(), "local");  // --auth none
  }
  auto verify = [&]() {
    auto audit = v1::AuditService::NewStub(channel_);
    grpc::ClientContext ctx;
    v1::VerifyAuditResponse response;
    const grpc::Status s = audit->VerifyAudit(&ctx, v1::VerifyAuditRequest(), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  };
  const v1::VerifyAuditResponse good = verify();
  ASSERT_TRUE(good.ok()) << good.reason();
  // create x2, push x2, seal x2, sign.
  EXPECT_EQ(good.records(), 7u);

  const std::string key = server::auth::AuditKey(2);  // it/ref's push
  std::string original;
  auto with_store = [&](const std::function<void(storage::Store&)>& f) {
    ASSERT_THAT(server_->Terminate(), IsOk());
    {
      absl::StatusOr<std::unique_ptr<storage::Store>> store =
          storage::OpenRocksDbStore(tmp_.path() + "/data");
      ASSERT_THAT(store, IsOk());
      f(**store);
    }
    ASSERT_THAT(server_->Start(), IsOk());
    Connect();
  };
  with_store([&](storage::Store& store) {
    absl::StatusOr<std::string> value = store.GetAuthRecord(key);
    ASSERT_THAT(value, IsOk());
    original = *value;
    std::string flipped = original;
    const size_t at = flipped.find("\"push\"");
    ASSERT_NE(at, std::string::npos) << flipped;
    flipped[at + 1] = 'P';  // "push" -> "Push"
    ASSERT_THAT(store.PutAuthRecord(key, flipped), IsOk());
  });
  const v1::VerifyAuditResponse bad = verify();
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.records(), 7u);
  ASSERT_TRUE(bad.has_bad_sequence());
  EXPECT_EQ(bad.bad_sequence(), 2u);
  EXPECT_THAT(bad.reason(), HasSubstr("hash mismatch"));

  with_store([&](storage::Store& store) {
    ASSERT_THAT(store.PutAuthRecord(key, original), IsOk());
    ASSERT_THAT(storage::internal::CorruptChunk(store, "it/cand", {"forward", "x", std::nullopt},
                                                0),
                IsOk());
  });
  const v1::VerifyAuditResponse changed = verify();
  EXPECT_FALSE(changed.ok());
  ASSERT_TRUE(changed.has_bad_sequence());
  EXPECT_EQ(changed.bad_sequence(), 6u);  // the sign record
  EXPECT_THAT(changed.reason(), HasSubstr("it/cand"));
  EXPECT_THAT(changed.reason(), HasSubstr("forward/x"));
  EXPECT_THAT(changed.reason(), HasSubstr(report.id()));
}

TEST(ServerStartup, RefusesNonLoopbackWithoutInsecure) {
  TempDir tmp;
  ServerProcess::Options options = ServerOptionsFor(tmp.path() + "/data");
  options.listen = "0.0.0.0:0";
  ServerProcess server(options);
  const absl::Status s = server.Start();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInternal,
                          HasSubstr("refusing to listen on non-loopback")));
  EXPECT_THAT(server.ReadLog(), HasSubstr("--insecure"));
}

}  // namespace
}  // namespace reprod::testing
