// Crash safety: SIGKILL reprodd at random points in the middle of an ingest,
// several times, restart it on the same data dir and port, and check after
// every kill (by opening the RocksDB store directly while the server is
// down) that every tensor the client saw acknowledged is stored intact and
// that nothing half-written is visible. The client (RemoteClient::Push)
// reconnects, resends what was not acknowledged and completes.
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/cpp/remote_client.h"
#include "client/cpp/tensor_source.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "tests/integration/server_process.h"
#include "tests/testing/status_matchers.h"

namespace reprod::testing {
namespace {

constexpr char kRun[] = "crash/run";

struct Expected {
  std::string key;
  uint32_t crc = 0;
  uint64_t bytes = 0;
};

// Opens the store the server left behind and checks it: every visible
// tensor is one we sent, with exactly its bytes (crc32c over what Read
// returns); the first `acked` tensors are all visible. Returns the count.
size_t CheckStore(const std::string& dir, const std::vector<Expected>& sent,
                  size_t acked) {
  absl::StatusOr<std::unique_ptr<storage::Store>> store =
      storage::OpenRocksDbStore(dir);
  EXPECT_THAT(store, IsOk());
  if (!store.ok()) return 0;
  std::map<std::string, const Expected*> by_key;
  for (const Expected& e : sent) by_key[e.key] = &e;
  absl::StatusOr<std::vector<storage::TensorMeta>> tensors =
      (*store)->ListTensors(kRun);
  EXPECT_THAT(tensors, IsOk());
  if (!tensors.ok()) return 0;
  std::vector<uint8_t> buffer;
  std::set<std::string> visible;
  for (const storage::TensorMeta& meta : *tensors) {
    const std::string& key = meta.header.address.key;
    auto it = by_key.find(key);
    EXPECT_NE(it, by_key.end()) << "unexpected tensor " << key;
    if (it == by_key.end()) continue;
    EXPECT_EQ(meta.header.byte_length, it->second->bytes) << key;
    EXPECT_EQ(meta.header.crc32c, it->second->crc) << key;
    auto reader = (*store)->OpenTensor(kRun, meta.header.address);
    EXPECT_THAT(reader, IsOk()) << key;
    if (!reader.ok()) continue;
    buffer.resize(meta.header.byte_length);
    EXPECT_THAT((*reader)->Read(0, absl::MakeSpan(buffer)), IsOk()) << key;
    EXPECT_EQ(Crc32c(buffer.data(), buffer.size()), it->second->crc)
        << "bytes of " << key << " do not match what was sent";
    visible.insert(key);
  }
  for (size_t i = 0; i < acked && i < sent.size(); ++i) {
    EXPECT_TRUE(visible.count(sent[i].key))
        << "acknowledged tensor " << sent[i].key << " is missing after kill";
  }
  return visible.size();
}

TEST(CrashSafety, SigkillDuringIngestLosesNothingAcknowledged) {
  TempDir tmp;
  const std::string data_dir = tmp.path() + "/data";
  ServerProcess::Options server_options = ServerOptionsFor(data_dir);
  server_options.port = PickFreePort();
  ServerProcess server(server_options);
  ASSERT_THAT(server.Start(), IsOk());

  // ~570 MB in 288 tensors of 0.25-3.75 MiB with random bytes: enough that
  // the push outlasts two kills (with commits pipelined, 96 tensors often
  // finished within a second of the first restart).
  std::mt19937_64 rng(20261123);
  std::vector<client::PushItem> items;
  std::vector<Expected> sent;
  for (int i = 0; i < 288; ++i) {
    const int64_t n = (64 * 1024) * (1 + static_cast<int64_t>(rng() % 15));
    absl::StatusOr<Tensor> allocated = Tensor::Allocate(DType::kFloat32, Shape{n});
    ASSERT_THAT(allocated, IsOk());
    Tensor t = *std::move(allocated);
    auto* p = static_cast<uint8_t*>(t.mutable_data());
    for (int64_t b = 0; b < n * 4; b += 8) {
      const uint64_t v = rng();
      std::memcpy(p + b, &v, 8);
    }
    Expected e;
    e.key = "t" + std::to_string(i);
    e.bytes = static_cast<uint64_t>(n) * 4;
    e.crc = Crc32c(p, e.bytes);
    sent.push_back(e);
    items.push_back(client::PushItem{"train", e.key, std::nullopt,
                                     std::move(t)});
  }

  auto client = client::RemoteClient::Connect(server.address());
  ASSERT_THAT(client, IsOk());
  v1::Run run;
  run.set_name(kRun);
  ASSERT_THAT((*client)->CreateRun(run, /*exist_ok=*/false), IsOk());

  std::atomic<uint64_t> acked{0};
  client::PushOptions options;
  options.max_reconnects = 50;
  options.reconnect_timeout = absl::Seconds(120);
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(500);
  options.on_progress = [&](const client::PushProgress& p) {
    uint64_t prev = acked.load();
    while (p.tensors_acked > prev &&
           !acked.compare_exchange_weak(prev, p.tensors_acked)) {
    }
  };
  absl::StatusOr<client::PushSummary> summary;
  std::thread pusher([&] {
    client::VectorTensorSource source(std::move(items));
    summary = (*client)->Push(kRun, source, options);
  });

  // Kill at random points while tensors flow, check, restart.
  std::uniform_int_distribution<int> delay_ms(20, 400);
  int kills = 0;
  for (; kills < 4; ++kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    if (acked.load() >= sent.size()) break;
    server.Kill();
    const uint64_t acked_at_kill = acked.load();
    const size_t visible = CheckStore(data_dir, sent, acked_at_kill);
    EXPECT_GE(visible, acked_at_kill);
    std::printf("kill %d: %llu acked by the client, %zu visible and intact\n",
                kills + 1, static_cast<unsigned long long>(acked_at_kill),
                visible);
    ASSERT_THAT(server.Start(), IsOk());
    // Let the client reconnect and make progress before the next kill.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (acked.load() == acked_at_kill &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  pusher.join();
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->tensors, sent.size());
  EXPECT_GE(kills, 2) << "the push finished before the server could be "
                         "killed twice; make the data bigger";
  EXPECT_GE(summary->reconnects, 1);
  std::printf("push done: %llu stored, %llu already present, %d reconnects\n",
              static_cast<unsigned long long>(summary->stored),
              static_cast<unsigned long long>(summary->already_present),
              summary->reconnects);

  ASSERT_THAT(server.Terminate(), IsOk());
  EXPECT_EQ(CheckStore(data_dir, sent, sent.size()), sent.size());
}

}  // namespace
}  // namespace reprod::testing
