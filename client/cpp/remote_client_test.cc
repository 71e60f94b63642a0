// RemoteClient against in-process fake services (no reprodd needed): status
// mapping, name checks, Connect to nothing, Watch, and Push's pipelining,
// resend after UNAVAILABLE and final errors.
#include "client/cpp/remote_client.h"

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cpp/wire_convert.h"
#include "common/crc32c.h"
#include "common/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::client {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// What the fake ingest service stored, shared by server instances (a
// restarted fake server keeps its "disk").
struct FakeStore {
  absl::Mutex mu;
  std::map<std::string, std::string> tensors ABSL_GUARDED_BY(mu);  // address -> bytes
  int streams ABSL_GUARDED_BY(mu) = 0;
  uint64_t acks ABSL_GUARDED_BY(mu) = 0;
  uint64_t max_chunk ABSL_GUARDED_BY(mu) = 0;
  std::atomic<uint64_t> acks_atomic{0};

  // Behaviour knobs (set before the push).
  // On stream `unavailable_stream` (1-based; -1 never, 0 every stream), after
  // `unavailable_after` acks on it: store the next tensor but end the stream
  // with UNAVAILABLE instead of acking it.
  int unavailable_stream = -1;
  int unavailable_after = 0;
  // Return this error when the tensor with this key completes.
  std::string error_key;
  grpc::Status error_status;
  absl::Duration ack_delay = absl::ZeroDuration();
};

std::string Address(const v1::TensorAddress& a) { return AddressToString(a); }

class FakeIngest final : public v1::IngestService::Service {
 public:
  explicit FakeIngest(FakeStore* store) : store_(store) {}

  grpc::Status Ingest(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::IngestResponse, v1::IngestRequest>* stream) override {
    int stream_no;
    {
      absl::MutexLock lock(&store_->mu);
      stream_no = ++store_->streams;
    }
    const bool fail_this =
        store_->unavailable_stream == 0 || store_->unavailable_stream == stream_no;
    int acked_here = 0;
    v1::IngestRequest request;
    v1::BeginTensor begin;
    std::string bytes;
    bool open = false;
    auto complete = [&]() -> grpc::Status {
      open = false;
      const v1::TensorHeader& h = begin.header();
      if (Crc32c(bytes) != h.crc32c()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "crc32c mismatch");
      }
      if (!store_->error_key.empty() && h.address().key() == store_->error_key) {
        return store_->error_status;
      }
      v1::IngestResponse ack;
      ack.set_tensor_id(begin.tensor_id());
      *ack.mutable_address() = h.address();
      {
        absl::MutexLock lock(&store_->mu);
        auto [it, inserted] = store_->tensors.emplace(Address(h.address()), bytes);
        if (!inserted && it->second != bytes) {
          return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                              absl::StrCat("different bytes at ", Address(h.address())));
        }
        ack.set_kind(inserted ? v1::ACK_KIND_STORED : v1::ACK_KIND_ALREADY_PRESENT);
      }
      if (fail_this && acked_here == store_->unavailable_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down");
      }
      absl::SleepFor(store_->ack_delay);
      {
        absl::MutexLock lock(&store_->mu);
        ++store_->acks;
      }
      ++store_->acks_atomic;
      ++acked_here;
      stream->Write(ack);
      return grpc::Status::OK;
    };
    if (fail_this && store_->unavailable_after < 0) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server starting");
    }
    while (stream->Read(&request)) {
      if (request.has_begin()) {
        if (open) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "begin while open");
        begin = request.begin();
        bytes.clear();
        open = true;
        if (begin.header().byte_length() == 0) {
          if (grpc::Status s = complete(); !s.ok()) return s;
        }
      } else {
        if (!open || request.chunk().offset() != bytes.size()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad chunk offset");
        }
        {
          absl::MutexLock lock(&store_->mu);
          store_->max_chunk = std::max<uint64_t>(store_->max_chunk, request.chunk().data().size());
        }
        bytes += request.chunk().data();
        if (bytes.size() > begin.header().byte_length()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "past the end");
        }
        if (bytes.size() == begin.header().byte_length()) {
          if (grpc::Status s = complete(); !s.ok()) return s;
        }
      }
    }
    if (open) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "incomplete tensor");
    return grpc::Status::OK;
  }

 private:
  FakeStore* store_;
};

class FakeRuns final : public v1::RunService::Service {
 public:
  std::atomic<int> calls{0};
  grpc::Status CreateRun(grpc::ServerContext*, const v1::CreateRunRequest* request,
                         v1::Run* response) override {
    ++calls;
    *response = request->run();
    response->set_state(v1::RUN_STATE_OPEN);
    if (!request->exist_ok()) response->mutable_labels()->insert({"exist_ok", "false"});
    return grpc::Status::OK;
  }
  grpc::Status GetRun(grpc::ServerContext*, const v1::GetRunRequest* request, v1::Run*) override {
    ++calls;
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("run '", request->name(), "' not found"));
  }
  // Key "good": float32 [1, 2, 3] in two chunks; "corrupt": a wrong CRC;
  // "short": one byte missing; anything else NOT_FOUND.
  grpc::Status ReadTensor(grpc::ServerContext*, const v1::ReadTensorRequest* request,
                          grpc::ServerWriter<v1::ReadTensorResponse>* writer) override {
    const std::string& key = request->address().key();
    if (key != "good" && key != "corrupt" && key != "short") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no tensor ", key));
    }
    const float values[] = {1, 2, 3};
    std::string bytes(reinterpret_cast<const char*>(values), sizeof(values));
    v1::ReadTensorResponse header;
    v1::TensorHeader* h = header.mutable_header();
    *h->mutable_address() = request->address();
    h->set_dtype(v1::DTYPE_FLOAT32);
    h->add_shape(3);
    h->set_byte_length(bytes.size());
    h->set_crc32c(Crc32c(bytes) + (key == "corrupt" ? 1 : 0));
    writer->Write(header);
    if (key == "short") bytes.pop_back();
    for (size_t at = 0; at < bytes.size(); at += 8) {
      v1::ReadTensorResponse chunk;
      chunk.mutable_chunk()->set_offset(at);
      chunk.mutable_chunk()->set_data(bytes.substr(at, 8));
      writer->Write(chunk);
    }
    return grpc::Status::OK;
  }
};

class FakeCompare final : public v1::CompareService::Service {
 public:
  grpc::Status Watch(grpc::ServerContext*, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::WatchEvent>* writer) override {
    for (int i = 0; i < 2; ++i) {
      v1::WatchEvent e;
      e.mutable_verdict()->mutable_address()->set_checkpoint("forward");
      e.mutable_verdict()->mutable_address()->set_key(absl::StrCat("k", i));
      e.mutable_verdict()->set_status(i == 0 ? v1::TENSOR_STATUS_PASS : v1::TENSOR_STATUS_FAIL);
      writer->Write(e);
    }
    v1::WatchEvent e;
    e.mutable_report()->set_id("rpt-0000000000000001");
    e.mutable_report()->set_ref(request->ref());
    e.mutable_report()->set_cand(request->cand());
    writer->Write(e);
    return grpc::Status::OK;
  }
};

// An in-process server on 127.0.0.1 (a fixed port when given: restarts).
class FakeServer {
 public:
  explicit FakeServer(FakeStore* store, int port = 0) : ingest_(store) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&ingest_);
    builder.RegisterService(&runs_);
    builder.RegisterService(&compare_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { Shutdown(); }
  void Shutdown() {
    if (server_)
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  FakeRuns& runs() { return runs_; }

 private:
  FakeIngest ingest_;
  FakeRuns runs_;
  FakeCompare compare_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// A TCP port with nothing listening (bound then closed).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

Tensor Bytes(size_t n, int seed) {
  auto t = Tensor::Allocate(DType::kUInt8, {static_cast<int64_t>(n)});
  EXPECT_TRUE(t.ok());
  auto* p = static_cast<unsigned char*>(t->mutable_data());
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>(i * 31 + seed);
  return *t;
}

std::vector<PushItem> Items(int n, size_t bytes_each) {
  std::vector<PushItem> items;
  for (int i = 0; i < n; ++i) {
    items.push_back({"forward", absl::StrCat("k", i), std::nullopt, Bytes(bytes_each, i)});
  }
  return items;
}

std::string AsString(const Tensor& t) {
  return std::string(static_cast<const char*>(t.data()), t.num_bytes());
}

PushOptions FastRetries() {
  PushOptions options;
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(50);
  options.reconnect_timeout = absl::Seconds(10);
  return options;
}

TEST(Connect, NothingListeningIsUnavailableQuicklyAndNamesTheAddress) {
  const std::string target = absl::StrCat("127.0.0.1:", FreePort());
  const absl::Time start = absl::Now();
  auto client = RemoteClient::Connect(target);
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnavailable, HasSubstr(target)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(Connect, NothingListeningGetsNoTlsHint) {
  const std::string target = absl::StrCat("127.0.0.1:", FreePort());
  ConnectOptions options;
  options.tls = tls::TlsPem{};  // TLS with the system roots: still "refused"
  for (const auto& opts : {ConnectOptions{}, options}) {
    EXPECT_THAT(RemoteClient::Connect(target, opts),
                StatusIs(absl::StatusCode::kUnavailable,
                         AllOf(HasSubstr("connection refused or failed"), HasSubstr("refused"),
                               Not(HasSubstr("TLS")))));
  }
}

// The texts are gRPC 1.51's (with OpenSSL 3) for each mismatch, as seen
// against a real reprodd (tests/python/test_tls.py runs them end to end).
TEST(TlsHint, NamesTheMissingFlagForEachMismatch) {
  const std::string closed =
      "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:4: Socket "
      "closed";
  const std::string plaintext_server =
      "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4: Ssl "
      "handshake failed: SSL_ERROR_SSL: error:0A00010B:SSL routines::wrong version number";
  const std::string untrusted =
      "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4: Ssl "
      "handshake failed: SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify failed";
  const std::string refused =
      "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4: Failed to "
      "connect to remote host: Connection refused";
  EXPECT_THAT(TlsHint(closed, false, false, true),
              AllOf(HasSubstr("requires TLS"), HasSubstr("--tls-ca")));
  EXPECT_THAT(TlsHint(closed, true, false, true),
              AllOf(HasSubstr("client certificate"), HasSubstr("--tls-cert")));
  EXPECT_THAT(TlsHint(closed, true, true, true), HasSubstr("--tls-client-ca"));
  EXPECT_THAT(TlsHint(plaintext_server, true, false, true), HasSubstr("does not speak TLS"));
  EXPECT_THAT(TlsHint(untrusted, true, false, true),
              AllOf(HasSubstr("not trusted"), HasSubstr("--tls-ca")));
  EXPECT_EQ(TlsHint(refused, false, false, true), "");
  EXPECT_EQ(TlsHint(refused, true, true, true), "");
  // A connection closed after it was up is an outage (a restart), not TLS.
  EXPECT_EQ(TlsHint("Socket closed", false, false, false), "");
  EXPECT_EQ(TlsHint("Socket closed", true, false, false), "");
  EXPECT_THAT(TlsHint(untrusted, true, false, false), HasSubstr("not trusted"));
}

TEST(ChannelTarget, ListsOfReplicasBecomeOneTargetInOrder) {
  EXPECT_THAT(ChannelTarget("reprod.lan:50051"), IsOkAndHolds(std::string("reprod.lan:50051")));
  EXPECT_THAT(ChannelTarget("127.0.0.1:5001,127.0.0.2:5002"),
              IsOkAndHolds(std::string("ipv4:127.0.0.1:5001,127.0.0.2:5002")));
  EXPECT_THAT(ChannelTarget("localhost:7, 127.0.0.1:8"),
              IsOkAndHolds(std::string("ipv4:127.0.0.1:7,127.0.0.1:8")));
  EXPECT_THAT(ChannelTarget("[::1]:7,[::1]:8"), IsOkAndHolds(std::string("ipv6:[::1]:7,[::1]:8")));
  EXPECT_THAT(ChannelTarget("127.0.0.1:7,[::1]:8"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mix IPv4 and IPv6")));
  EXPECT_THAT(ChannelTarget("127.0.0.1:7,nocolon"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'nocolon'")));
}

TEST(Connect, EmptyTargetIsInvalid) {
  EXPECT_THAT(RemoteClient::Connect(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("HOST:PORT")));
}

TEST(RemoteClient, ReplicasInTheListTakeOverFromOneThatGoesAway) {
  // Two servers over one store, as reprodd replicas over one postgres+s3.
  FakeStore store;
  FakeServer first(&store), second(&store);
  ASSERT_TRUE(first.ok() && second.ok());
  // A dead address first: the client connects to the next one.
  const std::string dead = absl::StrCat("127.0.0.1:", FreePort());
  ASSERT_OK_AND_ASSIGN(auto client,
                       RemoteClient::Connect(absl::StrCat(dead, ",", first.target(), ",",
                                                          second.target())));
  v1::Run run;
  run.set_name("team/run");
  ASSERT_THAT(client->CreateRun(run, /*exist_ok=*/false).status(), IsOk());
  EXPECT_EQ(first.runs().calls.load(), 1);
  EXPECT_EQ(second.runs().calls.load(), 0);
  // The replica in use goes away; calls move on to the last one (the
  // fake's GetRun answers NOT_FOUND: a call that reached a server).
  first.Shutdown();
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    last = client->GetRun("team/run").status();
    if (absl::IsNotFound(last)) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(last, StatusIs(absl::StatusCode::kNotFound, HasSubstr("team/run")));
  EXPECT_EQ(first.runs().calls.load(), 1);
  EXPECT_GE(second.runs().calls.load(), 1);
}

TEST(RemoteClient, UnaryCallsMapStatusesAndKeepMessages) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_TRUE(server.ok());
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  EXPECT_THAT(client->GetRun("team/missing"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("run 'team/missing' not found")));
  v1::Run run;
  run.set_name("team/run");
  run.set_framework("paddle");
  ASSERT_OK_AND_ASSIGN(v1::Run created, client->CreateRun(run, /*exist_ok=*/true));
  EXPECT_EQ(created.framework(), "paddle");
  EXPECT_EQ(created.labels().count("exist_ok"), 0u);
  // The server is gone: UNAVAILABLE naming it.
  server.Shutdown();
  EXPECT_THAT(client->GetRun("team/run"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(server.target())));
}

TEST(RemoteClient, ReadTensorAssemblesChunksAndChecksLengthAndCrc) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_TRUE(server.ok());
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  v1::TensorAddress a;
  a.set_checkpoint("layers");
  a.set_key("good");
  ASSERT_OK_AND_ASSIGN(Tensor t, client->ReadTensor("team/run", a));
  EXPECT_EQ(t.dtype(), DType::kFloat32);
  EXPECT_EQ(t.shape(), (Shape{3}));
  const auto* v = static_cast<const float*>(t.data());
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[2], 3);
  a.set_key("corrupt");
  EXPECT_THAT(client->ReadTensor("team/run", a),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("run 'team/run' tensor layers/corrupt"),
                             HasSubstr("CRC-32C"))));
  a.set_key("short");
  EXPECT_THAT(client->ReadTensor("team/run", a),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("received 11 of 12 bytes")));
  a.set_key("missing");
  EXPECT_THAT(client->ReadTensor("team/run", a),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no tensor missing")));
}

TEST(RemoteClient, BadNamesAreRefusedWithoutARoundTrip) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  EXPECT_THAT(client->GetRun("no-namespace"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(client->SealRun("a/b c", false),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(client->ListTensors("a/b", "bad ckpt"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  v1::CompareRequest compare;
  compare.set_ref("a/b");
  compare.set_cand("../x");
  EXPECT_THAT(client->Compare(compare), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_EQ(server.runs().calls.load(), 0);
}

TEST(RemoteClient, WatchDeliversEventsInOrder) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  v1::WatchRequest request;
  request.set_ref("a/torch");
  request.set_cand("a/paddle");
  std::vector<std::string> seen;
  ASSERT_THAT(client->Watch(request,
                            [&](const v1::WatchEvent& e) {
                              seen.push_back(e.has_verdict() ? Address(e.verdict().address())
                                                             : e.report().id());
                            }),
              IsOk());
  EXPECT_THAT(seen, ::testing::ElementsAre("forward/k0", "forward/k1", "rpt-0000000000000001"));
}

TEST(Push, StoresEveryTensorInChunksAndReportsProgress) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  std::vector<PushItem> items = Items(10, 1000);
  items.push_back({"bp_align", "big", 2, Bytes((size_t{5} << 19) + 3, 99)});  // 2.5 MiB + 3
  items.push_back({"loss", "empty", std::nullopt, Bytes(0, 0)});
  uint64_t total = 0;
  for (const PushItem& i : items) total += i.tensor.num_bytes();
  VectorTensorSource source(items);

  absl::Mutex mu;
  std::vector<PushProgress> progress;
  PushOptions options;
  options.on_progress = [&](const PushProgress& p) {
    absl::MutexLock lock(&mu);
    progress.push_back(p);
  };
  ASSERT_OK_AND_ASSIGN(PushSummary summary, client->Push("team/run", source, options));
  EXPECT_EQ(summary.tensors, items.size());
  EXPECT_EQ(summary.stored, items.size());
  EXPECT_EQ(summary.already_present, 0u);
  EXPECT_EQ(summary.bytes, total);
  EXPECT_EQ(summary.reconnects, 0);

  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.streams, 1);
  EXPECT_EQ(store.max_chunk, kDefaultChunkBytes);
  ASSERT_EQ(store.tensors.size(), items.size());
  for (const PushItem& i : items) {
    const std::string address =
        absl::StrCat(i.checkpoint, "/", i.key, i.step ? absl::StrCat("@", *i.step) : "");
    EXPECT_EQ(store.tensors[address], AsString(i.tensor)) << address;
  }
  absl::MutexLock plock(&mu);
  ASSERT_EQ(progress.size(), items.size());  // one per ack (all under 16 MiB)
  for (size_t i = 1; i < progress.size(); ++i) {
    EXPECT_GE(progress[i].bytes_acked, progress[i - 1].bytes_acked);
  }
  EXPECT_EQ(progress.back().bytes_acked, total);
  EXPECT_EQ(progress.back().bytes_total, total);
  EXPECT_EQ(progress.back().tensors_acked, items.size());
}

// Records, each time Push asks for the next tensor, how many it pulled
// that the server has not acknowledged yet.
class CountingSource final : public TensorSource {
 public:
  CountingSource(std::vector<PushItem> items, FakeStore* store)
      : items_(std::move(items)), store_(store) {}
  absl::StatusOr<std::optional<PushItem>> Next() override {
    if (next_ > 0) {
      max_unacked_ = std::max<uint64_t>(max_unacked_, next_ - store_->acks_atomic.load());
    }
    if (next_ >= items_.size()) return std::optional<PushItem>();
    return std::optional<PushItem>(items_[next_++]);
  }
  uint64_t max_unacked() const { return max_unacked_; }

 private:
  std::vector<PushItem> items_;
  FakeStore* store_;
  size_t next_ = 0;
  uint64_t max_unacked_ = 0;
};

TEST(Push, PipelinesWithinTheWindow) {
  FakeStore store;
  store.ack_delay = absl::Milliseconds(5);
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  CountingSource source(Items(40, 10000), &store);
  PushOptions options;
  options.window_bytes = 40000;  // four tensors
  ASSERT_OK_AND_ASSIGN(PushSummary summary, client->Push("team/run", source, options));
  EXPECT_EQ(summary.tensors, 40u);
  // More than one in flight (pipelined), never more than the window (the
  // tensor just pulled waits for room, hence + 1).
  EXPECT_GE(source.max_unacked(), 2u);
  EXPECT_LE(source.max_unacked(), 5u);
}

TEST(Push, ResendsUnackedTensorsAfterUnavailable) {
  FakeStore store;
  store.unavailable_stream = 1;
  store.unavailable_after = 4;  // the 5th tensor is stored but not acked
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  std::vector<PushItem> items = Items(12, 3000);
  VectorTensorSource source(items);
  ASSERT_OK_AND_ASSIGN(PushSummary summary, client->Push("team/run", source, FastRetries()));
  EXPECT_EQ(summary.tensors, 12u);
  EXPECT_EQ(summary.already_present, 1u);  // the stored-but-unacked one
  EXPECT_EQ(summary.stored, 11u);
  EXPECT_EQ(summary.reconnects, 1);
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.streams, 2);
  ASSERT_EQ(store.tensors.size(), 12u);
  for (const PushItem& i : items) {
    EXPECT_EQ(store.tensors[absl::StrCat("forward/", i.key)], AsString(i.tensor));
  }
}

TEST(Push, GivesUpAfterMaxReconnects) {
  FakeStore store;
  store.unavailable_stream = 0;  // every stream
  store.unavailable_after = -1;  // at once
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  VectorTensorSource source(Items(3, 10));
  PushOptions options = FastRetries();
  options.max_reconnects = 2;
  EXPECT_THAT(client->Push("team/run", source, options),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(HasSubstr("server starting"),
                                        HasSubstr("gave up after 2 reconnect attempts"),
                                        HasSubstr(server.target()))));
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.streams, 3);
}

TEST(Push, OtherErrorsAreFinalAndKeepTheServersMessage) {
  FakeStore store;
  store.error_key = "k3";
  store.error_status = grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                    "run 'team/run' tensor forward/k3: different bytes stored");
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  VectorTensorSource source(Items(6, 100));
  EXPECT_THAT(client->Push("team/run", source, FastRetries()),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       "run 'team/run' tensor forward/k3: different bytes stored"));
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.streams, 1);
  EXPECT_EQ(store.tensors.size(), 3u);  // k0..k2 acked, then the error
}

class FailingSource final : public TensorSource {
 public:
  absl::StatusOr<std::optional<PushItem>> Next() override {
    if (n_ == 3) return absl::DataLossError("x.npy: truncated");
    std::optional<PushItem> item(std::in_place);
    item->checkpoint = "forward";
    item->key = absl::StrCat("k", n_++);
    item->tensor = Bytes(10, 1);
    return item;
  }

 private:
  int n_ = 0;
};

TEST(Push, SourceErrorEndsThePushAfterTheAcksOfWhatWasSent) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  FailingSource source;
  EXPECT_THAT(client->Push("team/run", source),
              StatusIs(absl::StatusCode::kDataLoss, "x.npy: truncated"));
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.tensors.size(), 3u);
  EXPECT_EQ(store.acks, 3u);
}

TEST(Push, InvalidKeyOrRunIsRefusedLocally) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  std::vector<PushItem> items = Items(2, 10);
  items.push_back({"forward", "bad key", std::nullopt, Bytes(10, 0)});
  VectorTensorSource source(items);
  EXPECT_THAT(client->Push("team/run", source),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("forward/bad key")));
  VectorTensorSource source2(Items(1, 1));
  EXPECT_THAT(client->Push("norun", source2),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.tensors.size(), 2u);
}

TEST(Push, InvalidRankOrPlacementIsRefusedLocally) {
  FakeStore store;
  FakeServer server(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server.target()));
  PushItem high{"forward", "x", 2, Bytes(10, 0)};
  high.rank = kMaxRank + 1;
  VectorTensorSource source({high});
  EXPECT_THAT(client->Push("team/run", source),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("forward/x@2#rank 1048576: invalid rank 1048576")));
  // Elements 5..14 of 12 do not exist.
  PushItem past{"forward", "x", std::nullopt, Bytes(10, 0)};
  past.rank = 1;
  past.placement = Placement::Shard(0, {12}, {5});
  VectorTensorSource source2({past});
  EXPECT_THAT(client->Push("team/run", source2),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("forward/x#rank 1: invalid placement shard")));
  absl::MutexLock lock(&store.mu);
  EXPECT_EQ(store.tensors.size(), 0u);
}

// The server goes away mid-push (shut down, port closed) and comes back on
// the same port: Push waits for it and resends what was not acknowledged.
class RestartingSource final : public TensorSource {
 public:
  RestartingSource(std::vector<PushItem> items, std::function<void()> at_half)
      : items_(std::move(items)), at_half_(std::move(at_half)) {}
  absl::StatusOr<std::optional<PushItem>> Next() override {
    if (next_ == items_.size() / 2) at_half_();
    if (next_ >= items_.size()) return std::optional<PushItem>();
    return std::optional<PushItem>(items_[next_++]);
  }

 private:
  std::vector<PushItem> items_;
  size_t next_ = 0;
  std::function<void()> at_half_;
};

TEST(Push, SurvivesAServerRestart) {
  FakeStore store;
  auto server = std::make_unique<FakeServer>(&store);
  ASSERT_TRUE(server->ok());
  const int port = server->port();
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server->target()));
  std::thread restarter;
  std::vector<PushItem> items = Items(20, 200000);
  RestartingSource source(items, [&] {
    if (restarter.joinable()) return;
    // Down now (the open stream is cancelled), back 300 ms later.
    server->Shutdown();
    server.reset();
    restarter = std::thread([&] {
      absl::SleepFor(absl::Milliseconds(300));
      server = std::make_unique<FakeServer>(&store, port);
    });
  });
  absl::StatusOr<PushSummary> summary = client->Push("team/run", source, FastRetries());
  // Join before any assertion can return: a joinable std::thread destroyed
  // by an early return aborts the whole test binary and hides the failure.
  if (restarter.joinable()) restarter.join();
  ASSERT_TRUE(server != nullptr && server->ok()) << "the restarted server did not listen";
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->tensors, 20u);
  EXPECT_GE(summary->reconnects, 1);
  absl::MutexLock lock(&store.mu);
  ASSERT_EQ(store.tensors.size(), 20u);
  for (const PushItem& i : items) {
    EXPECT_EQ(store.tensors[absl::StrCat("forward/", i.key)], AsString(i.tensor));
  }
}

TEST(Push, GivesUpWhenTheServerDoesNotComeBack) {
  FakeStore store;
  auto server = std::make_unique<FakeServer>(&store);
  ASSERT_OK_AND_ASSIGN(auto client, RemoteClient::Connect(server->target()));
  RestartingSource source(Items(20, 200000), [&] {
    if (server) server->Shutdown();
  });
  PushOptions options = FastRetries();
  options.reconnect_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->Push("team/run", source, options),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(HasSubstr(server->target()),
                                        HasSubstr("did not come back within 500ms"),
                                        HasSubstr("tensors acknowledged"))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace reprod::client
