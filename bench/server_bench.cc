// reprod_server_bench: the server's two headline costs in one run, each
// next to its yardstick on the same machine:
//
//  1. Ingest throughput: one Ingest stream (RemoteClient::Push, pipelined,
//     1 MiB chunks) of 64 MiB float32 tensors into an in-process ReprodServer
//     on loopback (RocksDB store in a temp dir; durable acks), vs raw TCP
//     loopback throughput (one socket, 1 MiB writes, reader discards) and vs
//     the same server on the memory store (gRPC cost without storage).
//  2. Compare time for two BERT-base-sized runs (110M params + 110M grads,
//     float32, the real BERT-base tensor shapes) on the CPU backend through
//     CompareService.Compare, ingest excluded.
//
// Prints a markdown table and, with --json FILE, writes the numbers.
// Usage: reprod_server_bench [--tensors N] [--repeats N] [--window-mib N]
//                            [--json FILE]
// --window-mib: unacknowledged bytes the client keeps in flight (256).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/remote_client.h"
#include "client/cpp/tensor_source.h"
#include "common/logging.h"
#include "server/server.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Raw TCP loopback: bytes/second of one socket carrying `total` bytes in
// 1 MiB writes to a reader that discards them.
double RawTcpThroughput(uint64_t total) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(listener, 1);
  std::thread reader([&] {
    const int fd = accept(listener, nullptr, nullptr);
    std::vector<char> buf(1 << 20);
    uint64_t got = 0;
    while (got < total) {
      const ssize_t n = read(fd, buf.data(), buf.size());
      if (n <= 0) break;
      got += static_cast<uint64_t>(n);
    }
    close(fd);
  });
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  std::vector<char> buf(1 << 20, 'x');
  const auto t0 = Clock::now();
  uint64_t sent = 0;
  while (sent < total) {
    const ssize_t n = write(fd, buf.data(), buf.size());
    if (n <= 0) break;
    sent += static_cast<uint64_t>(n);
  }
  close(fd);
  reader.join();
  const auto t1 = Clock::now();
  close(listener);
  return static_cast<double>(total) / Seconds(t0, t1);
}

reprod::Tensor RandomF32(int64_t n, std::mt19937& rng) {
  reprod::Tensor t = *reprod::Tensor::Allocate(reprod::DType::kFloat32,
                                               reprod::Shape{n});
  auto* p = static_cast<float*>(t.mutable_data());
  std::normal_distribution<float> dist(0.f, 0.02f);
  for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
  return t;
}

reprod::Tensor Perturbed(const reprod::Tensor& t, std::mt19937& rng) {
  reprod::Tensor out = *reprod::Tensor::Allocate(t.dtype(), t.shape());
  const auto* src = static_cast<const float*>(t.data());
  auto* dst = static_cast<float*>(out.mutable_data());
  std::uniform_real_distribution<float> eps(-1e-7f, 1e-7f);
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    dst[i] = src[i] + eps(rng);
  }
  return out;
}

struct Server {
  std::unique_ptr<reprod::server::ReprodServer> server;
  std::unique_ptr<reprod::client::RemoteClient> client;
};

Server StartServer(reprod::server::StoreKind store, const std::string& dir) {
  reprod::server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.store = store;
  options.data_dir = dir;
  options.backend = reprod::kernels::BackendKind::kCpu;
  Server s;
  auto started = reprod::server::ReprodServer::Start(options);
  if (!started.ok()) {
    std::fprintf(stderr, "server: %s\n", started.status().ToString().c_str());
    std::exit(1);
  }
  s.server = *std::move(started);
  auto client = reprod::client::RemoteClient::Connect(s.server->address());
  if (!client.ok()) {
    std::fprintf(stderr, "client: %s\n", client.status().ToString().c_str());
    std::exit(1);
  }
  s.client = *std::move(client);
  return s;
}

void CreateRun(reprod::client::RemoteClient& c, const std::string& name) {
  reprod::v1::Run run;
  run.set_name(name);
  auto r = c.CreateRun(run, true);
  if (!r.ok()) {
    std::fprintf(stderr, "create run: %s\n", r.status().ToString().c_str());
    std::exit(1);
  }
}

// Pushes `tensors` 64 MiB tensors (shared bytes) on one stream; bytes/s.
uint64_t g_window_bytes = uint64_t{256} << 20;

double IngestThroughput(Server& s, const std::string& run,
                        const reprod::Tensor& payload, int tensors) {
  CreateRun(*s.client, run);
  std::vector<reprod::client::PushItem> items;
  for (int i = 0; i < tensors; ++i) {
    reprod::Tensor view = reprod::Tensor::Borrow(
        payload.dtype(), payload.shape(), payload.data(), nullptr);
    items.push_back({"ingest", absl::StrCat("t", i), std::nullopt, view});
  }
  reprod::client::VectorTensorSource source(std::move(items));
  const auto t0 = Clock::now();
  reprod::client::PushOptions push_options;
  push_options.window_bytes = g_window_bytes;
  auto summary = s.client->Push(run, source, push_options);
  const auto t1 = Clock::now();
  if (!summary.ok() || summary->stored != static_cast<uint64_t>(tensors)) {
    std::fprintf(stderr, "push: %s\n", summary.status().ToString().c_str());
    std::exit(1);
  }
  return static_cast<double>(payload.num_bytes()) * tensors / Seconds(t0, t1);
}

// BERT-base (uncased) parameter shapes: 109.5M parameters.
std::vector<std::pair<std::string, std::vector<int64_t>>> BertBaseShapes() {
  std::vector<std::pair<std::string, std::vector<int64_t>>> s = {
      {"embeddings/word", {30522, 768}},
      {"embeddings/position", {512, 768}},
      {"embeddings/token_type", {2, 768}},
      {"embeddings/ln/w", {768}},
      {"embeddings/ln/b", {768}}};
  for (int l = 0; l < 12; ++l) {
    const std::string p = absl::StrCat("encoder/layer", l, "/");
    for (const char* m : {"q", "k", "v", "o"}) {
      s.push_back({p + m + "/w", {768, 768}});
      s.push_back({p + m + "/b", {768}});
    }
    s.push_back({p + "ln1/w", {768}});
    s.push_back({p + "ln1/b", {768}});
    s.push_back({p + "ffn1/w", {768, 3072}});
    s.push_back({p + "ffn1/b", {3072}});
    s.push_back({p + "ffn2/w", {3072, 768}});
    s.push_back({p + "ffn2/b", {768}});
    s.push_back({p + "ln2/w", {768}});
    s.push_back({p + "ln2/b", {768}});
  }
  s.push_back({"pooler/w", {768, 768}});
  s.push_back({"pooler/b", {768}});
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int tensors = 16;
  int repeats = 3;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tensors") tensors = std::atoi(argv[i + 1]);
    if (a == "--repeats") repeats = std::atoi(argv[i + 1]);
    if (a == "--json") json_path = argv[i + 1];
    if (a == "--window-mib") g_window_bytes = std::stoull(argv[i + 1]) << 20;
  }
  (void)reprod::InitLogging("warn");
  const std::string dir =
      (std::filesystem::temp_directory_path() / "reprod-server-bench").string();
  std::filesystem::remove_all(dir);

  std::mt19937 rng(42);
  const int64_t n64 = (int64_t{64} << 20) / 4;
  reprod::Tensor payload = RandomF32(n64, rng);
  const uint64_t total = payload.num_bytes() * static_cast<uint64_t>(tensors);

  std::vector<double> tcp, rocks, memory;
  {
    Server mem = StartServer(reprod::server::StoreKind::kMemory, dir + "-mem");
    Server disk = StartServer(reprod::server::StoreKind::kRocksDb, dir);
    for (int r = 0; r < repeats; ++r) {
      tcp.push_back(RawTcpThroughput(total));
      rocks.push_back(
          IngestThroughput(disk, absl::StrCat("bench/rocks", r), payload, tensors));
      memory.push_back(
          IngestThroughput(mem, absl::StrCat("bench/mem", r), payload, tensors));
      // Drop the memory store's copy before the next round.
      (void)mem.client->DeleteRun(absl::StrCat("bench/mem", r));
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double tcp_bps = median(tcp), rocks_bps = median(rocks),
               mem_bps = median(memory);

  // BERT-base-sized compare.
  std::filesystem::remove_all(dir);
  Server disk = StartServer(reprod::server::StoreKind::kRocksDb, dir);
  CreateRun(*disk.client, "bert/torch");
  CreateRun(*disk.client, "bert/paddle");
  std::vector<reprod::client::PushItem> ref_items, cand_items;
  uint64_t elements = 0;
  for (const char* ckpt : {"params", "grads"}) {
    for (const auto& [key, shape] : BertBaseShapes()) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      elements += static_cast<uint64_t>(n);
      reprod::Tensor ref = RandomF32(n, rng);
      reprod::Tensor cand = Perturbed(ref, rng);
      ref_items.push_back({ckpt, key, std::nullopt, std::move(ref)});
      cand_items.push_back({ckpt, key, std::nullopt, std::move(cand)});
    }
  }
  {
    reprod::client::VectorTensorSource a(std::move(ref_items));
    reprod::client::VectorTensorSource b(std::move(cand_items));
    if (!disk.client->Push("bert/torch", a).ok() ||
        !disk.client->Push("bert/paddle", b).ok()) {
      std::fprintf(stderr, "bert push failed\n");
      return 1;
    }
  }
  std::vector<double> compare_s;
  bool passed = false;
  for (int r = 0; r < repeats; ++r) {
    reprod::v1::CompareRequest req;
    req.set_ref("bert/torch");
    req.set_cand("bert/paddle");
    req.set_format(reprod::v1::REPORT_FORMAT_JSON);
    const auto t0 = Clock::now();
    auto report = disk.client->Compare(req);
    const auto t1 = Clock::now();
    if (!report.ok()) {
      std::fprintf(stderr, "compare: %s\n", report.status().ToString().c_str());
      return 1;
    }
    passed = report->passed();
    compare_s.push_back(Seconds(t0, t1));
  }
  const double cmp = median(compare_s);
  disk.server.reset();
  std::filesystem::remove_all(dir);

  const unsigned cores = std::thread::hardware_concurrency();
  std::printf("| measurement | value | yardstick | ratio | goal |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| ingest, 1 stream, %d x 64 MiB f32, RocksDB (durable acks) | "
              "%.2f GB/s | raw TCP loopback %.2f GB/s | %.0f %% | >= 50 %% |\n",
              tensors, rocks_bps / 1e9, tcp_bps / 1e9,
              100 * rocks_bps / tcp_bps);
  std::printf("| ingest, same, memory store (gRPC only) | %.2f GB/s | raw TCP "
              "%.2f GB/s | %.0f %% | - |\n",
              mem_bps / 1e9, tcp_bps / 1e9, 100 * mem_bps / tcp_bps);
  std::printf("| compare BERT-base runs (%.1fM elements per run, f32), cpu "
              "backend, %u cores | %.3f s | - | - | < 2 s |\n",
              static_cast<double>(elements) / 1e6, cores, cmp);
  std::printf("(medians of %d; compare verdict passed=%s)\n", repeats,
              passed ? "true" : "false");
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"ingest_rocksdb_bytes_per_s\": " << rocks_bps
        << ",\n  \"ingest_memory_bytes_per_s\": " << mem_bps
        << ",\n  \"raw_tcp_bytes_per_s\": " << tcp_bps
        << ",\n  \"ingest_ratio_vs_tcp\": " << rocks_bps / tcp_bps
        << ",\n  \"compare_bert_base_s\": " << cmp
        << ",\n  \"compare_elements_per_run\": " << elements
        << ",\n  \"cores\": " << cores << ",\n  \"repeats\": " << repeats
        << "\n}\n";
  }
  return 0;
}
