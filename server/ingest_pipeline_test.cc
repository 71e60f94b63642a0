// The Ingest stream commits a tensor while it receives the next one: an
// in-process IngestService over a memory store whose commits wait on the
// test (GatedStore), driven by a raw bidirectional stream.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reprod/v1/ingest.grpc.pb.h"
#include "server/auth/audit_log.h"
#include "server/ingest_service.h"
#include "server/run_events.h"
#include "server/service_env.h"
#include "storage/memory/memory_store.h"
#include "storage/store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kRun[] = "team/pipelined";

// A memory store whose writers log what happens to each tensor ("append
// KEY", "complete KEY" once every byte is in, "commit KEY", "committed
// KEY") and whose commits wait until the test opens the tensor's gate
// (Open: commit; Fail: the commit returns the given error).
class GatedStore : public storage::Store {
 public:
  GatedStore() : base_(storage::CreateMemoryStore()) {}

  void Open(const std::string& key) { Set(key, absl::OkStatus()); }
  void Fail(const std::string& key, absl::Status why) { Set(key, std::move(why)); }

  // Waits (up to 10 s) until `event` is in the log.
  bool AwaitEvent(const std::string& event) {
    absl::MutexLock lock(&mu_);
    auto logged = [&] {
      mu_.AssertReaderHeld();
      for (const std::string& e : log_) {
        if (e == event) return true;
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&logged), absl::Seconds(10));
  }
  std::vector<std::string> log() {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  // The log's commit events only, in order.
  std::vector<std::string> commits() {
    std::vector<std::string> out;
    for (const std::string& e : log()) {
      if (e.rfind("commit", 0) == 0) out.push_back(e);
    }
    return out;
  }

  absl::Status CreateRun(const storage::RunInfo& run) override { return base_->CreateRun(run); }
  absl::StatusOr<storage::RunInfo> GetRun(std::string_view name) override {
    return base_->GetRun(name);
  }
  absl::StatusOr<std::vector<storage::RunInfo>> ListRuns(std::string_view prefix) override {
    return base_->ListRuns(prefix);
  }
  absl::StatusOr<storage::RunInfo> SealRun(std::string_view name,
                                           storage::RunState state) override {
    return base_->SealRun(name, state);
  }
  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override {
    return base_->DeleteRun(name);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorWriter>> BeginTensor(
      std::string_view run, const storage::TensorHeader& header) override {
    absl::StatusOr<std::unique_ptr<storage::TensorWriter>> w = base_->BeginTensor(run, header);
    if (!w.ok()) return w;
    return std::unique_ptr<storage::TensorWriter>(
        new Writer(*this, *std::move(w), header.address.key, header.byte_length));
  }
  absl::StatusOr<std::vector<storage::TensorMeta>> ListTensors(
      std::string_view run, std::string_view checkpoint) override {
    return base_->ListTensors(run, checkpoint);
  }
  absl::StatusOr<std::unique_ptr<storage::TensorReader>> OpenTensor(
      std::string_view run, const storage::TensorAddress& address) override {
    return base_->OpenTensor(run, address);
  }
  absl::Status PutReport(const storage::StoredReport& report) override {
    return base_->PutReport(report);
  }
  absl::StatusOr<storage::StoredReport> GetReport(std::string_view id) override {
    return base_->GetReport(id);
  }
  absl::StatusOr<std::vector<storage::StoredReport>> ListReports(std::string_view run,
                                                                 size_t limit) override {
    return base_->ListReports(run, limit);
  }
  absl::StatusOr<storage::RunInfo> SetRunReference(std::string_view name,
                                                   bool reference) override {
    return base_->SetRunReference(name, reference);
  }
  absl::Status PutAuthRecord(std::string_view key, std::string_view value) override {
    return base_->PutAuthRecord(key, value);
  }
  absl::Status InsertAuthRecord(std::string_view key, std::string_view value) override {
    return base_->InsertAuthRecord(key, value);
  }
  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override {
    return base_->GetAuthRecord(key);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListAuthRecords(
      std::string_view prefix) override {
    return base_->ListAuthRecords(prefix);
  }

 private:
  class Writer : public storage::TensorWriter {
   public:
    Writer(GatedStore& owner, std::unique_ptr<storage::TensorWriter> base, std::string key,
           uint64_t length)
        : owner_(owner), base_(std::move(base)), key_(std::move(key)), length_(length) {}
    absl::Status Append(absl::Span<const uint8_t> data) override {
      received_ += data.size();
      owner_.Log(absl::StrCat(received_ == length_ ? "complete " : "append ", key_));
      return base_->Append(data);
    }
    absl::StatusOr<storage::CommitResult> Commit() override {
      owner_.Log("commit " + key_);
      absl::Status gate = owner_.AwaitGate(key_);
      if (!gate.ok()) return gate;
      absl::StatusOr<storage::CommitResult> done = base_->Commit();
      owner_.Log("committed " + key_);
      return done;
    }

   private:
    GatedStore& owner_;
    std::unique_ptr<storage::TensorWriter> base_;
    std::string key_;
    uint64_t length_;
    uint64_t received_ = 0;
  };

  void Log(std::string event) {
    absl::MutexLock lock(&mu_);
    log_.push_back(std::move(event));
  }
  void Set(const std::string& key, absl::Status s) {
    absl::MutexLock lock(&mu_);
    gates_[key] = std::move(s);
  }
  absl::Status AwaitGate(const std::string& key) {
    absl::MutexLock lock(&mu_);
    auto open = [&] {
      mu_.AssertReaderHeld();
      return gates_.count(key) > 0;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&open), absl::Seconds(30))) {
      return absl::DeadlineExceededError("test gate never opened for " + key);
    }
    return gates_[key];
  }

  std::unique_ptr<storage::Store> base_;
  absl::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> gates_ ABSL_GUARDED_BY(mu_);
};

class IngestPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::RunInfo run;
    run.name = kRun;
    run.framework = "test";
    ASSERT_TRUE(store_.CreateRun(run).ok());
    env_.store = &store_;
    env_.events = &events_;
    absl::StatusOr<std::unique_ptr<auth::AuditLog>> audit = auth::AuditLog::Open(store_);
    ASSERT_TRUE(audit.ok()) << audit.status();
    audit_ = *std::move(audit);
    env_.audit = audit_.get();
    service_ = std::make_unique<IngestServiceImpl>(env_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::IngestService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    stream_ = stub_->Ingest(&ctx_);
    reader_ = std::thread([this] {
      v1::IngestResponse ack;
      while (stream_->Read(&ack)) {
        absl::MutexLock lock(&acks_mu_);
        acks_.push_back(ack.address().key());
      }
    });
  }

  void TearDown() override {
    store_.Open("a");  // never leave a commit waiting
    store_.Open("b");
    store_.Open("c");
    if (reader_.joinable()) {
      ctx_.TryCancel();
      reader_.join();
    }
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // Sends tensor `key`: a BeginTensor, then its bytes in 4 chunks.
  bool Send(const std::string& key, uint64_t id, size_t nbytes = 4 << 10) {
    std::string bytes(nbytes, '\0');
    for (size_t i = 0; i < nbytes; ++i) bytes[i] = static_cast<char>(i * 7 + id);
    v1::IngestRequest begin;
    begin.mutable_begin()->set_run(kRun);
    begin.mutable_begin()->set_tensor_id(id);
    v1::TensorHeader* h = begin.mutable_begin()->mutable_header();
    h->mutable_address()->set_checkpoint("ck");
    h->mutable_address()->set_key(key);
    h->set_dtype(v1::DTYPE_UINT8);
    h->add_shape(static_cast<int64_t>(nbytes));
    h->set_byte_length(nbytes);
    h->set_crc32c(Crc32c(bytes));
    if (!stream_->Write(begin)) return false;
    const size_t chunk = nbytes / 4;
    for (size_t off = 0; off < nbytes; off += chunk) {
      v1::IngestRequest c;
      c.mutable_chunk()->set_offset(off);
      c.mutable_chunk()->set_data(bytes.substr(off, chunk));
      if (!stream_->Write(c)) return false;
    }
    return true;
  }

  std::vector<std::string> acks() {
    absl::MutexLock lock(&acks_mu_);
    return acks_;
  }
  bool AwaitAcks(size_t n) {
    absl::MutexLock lock(&acks_mu_);
    auto enough = [&] {
      acks_mu_.AssertReaderHeld();
      return acks_.size() >= n;
    };
    return acks_mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  // Half-closes and returns the stream's status.
  grpc::Status Close() {
    stream_->WritesDone();
    reader_.join();
    return stream_->Finish();
  }

  GatedStore store_;
  RunEvents events_;
  std::unique_ptr<auth::AuditLog> audit_;
  ServiceEnv env_;
  std::unique_ptr<IngestServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::IngestService::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::IngestRequest, v1::IngestResponse>> stream_;
  std::thread reader_;
  absl::Mutex acks_mu_;
  std::vector<std::string> acks_ ABSL_GUARDED_BY(acks_mu_);
};

TEST_F(IngestPipelineTest, NextTensorIsReceivedWhileTheOneBeforeCommits) {
  ASSERT_TRUE(Send("a", 1));
  ASSERT_TRUE(store_.AwaitEvent("commit a"));
  // a's commit waits on the gate; b arrives and is written meanwhile.
  ASSERT_TRUE(Send("b", 2));
  ASSERT_TRUE(store_.AwaitEvent("complete b")) << ::testing::PrintToString(store_.log());
  EXPECT_THAT(acks(), ::testing::IsEmpty());  // no ack before its commit
  // b is not committed while a still is (one commit per stream, in order).
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_THAT(store_.commits(), ElementsAre("commit a"));

  store_.Open("a");
  ASSERT_TRUE(AwaitAcks(1));
  EXPECT_THAT(acks(), ElementsAre("a"));
  ASSERT_TRUE(store_.AwaitEvent("commit b"));
  EXPECT_THAT(store_.commits(), ElementsAre("commit a", "committed a", "commit b"));

  store_.Open("b");
  ASSERT_TRUE(AwaitAcks(2));
  const grpc::Status end = Close();
  EXPECT_TRUE(end.ok()) << end.error_message();
  EXPECT_THAT(acks(), ElementsAre("a", "b"));
  absl::StatusOr<std::vector<storage::TensorMeta>> stored = store_.ListTensors(kRun, "ck");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->size(), 2u);
}

TEST_F(IngestPipelineTest, HalfCloseEndsTheStreamOnlyAfterTheLastAck) {
  ASSERT_TRUE(Send("a", 1));
  stream_->WritesDone();
  ASSERT_TRUE(store_.AwaitEvent("commit a"));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_THAT(acks(), ::testing::IsEmpty());
  store_.Open("a");
  reader_.join();  // the stream's end
  EXPECT_THAT(acks(), ElementsAre("a"));
  const grpc::Status end = stream_->Finish();
  EXPECT_TRUE(end.ok()) << end.error_message();
}

TEST_F(IngestPipelineTest, AFailedCommitEndsTheStreamNamingItsTensor) {
  ASSERT_TRUE(Send("a", 1));
  ASSERT_TRUE(store_.AwaitEvent("commit a"));
  ASSERT_TRUE(Send("b", 2));
  ASSERT_TRUE(store_.AwaitEvent("complete b"));
  store_.Fail("a", absl::DataLossError("the disk said no"));
  reader_.join();
  const grpc::Status end = stream_->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(end.error_message(), HasSubstr("the disk said no"));
  EXPECT_THAT(end.error_message(), HasSubstr(kRun));
  EXPECT_THAT(end.error_message(), HasSubstr("ck/a"));
  EXPECT_THAT(acks(), ::testing::IsEmpty());
  // b, received after a, was never committed.
  EXPECT_THAT(store_.commits(), ElementsAre("commit a"));
  absl::StatusOr<std::vector<storage::TensorMeta>> stored = store_.ListTensors(kRun, "ck");
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty());
}

}  // namespace
}  // namespace reprod::server
