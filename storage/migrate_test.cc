// MigrateStore (storage/migrate.h): memory -> memory and RocksDB -> memory.
// The oracle is the source store itself: after a migration every run,
// tensor (header, order, bytes), report and auth record reads back the same
// from the destination.
#include "storage/migrate.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::storage {
namespace {

using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::ReadAll;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// Forwards to `base`; counts OpenTensor calls, fails the Nth Commit
// (1-based; 0 = never) and flips the first byte read of tensors whose key is
// `corrupt_key`.
class WrappedStore : public Store {
 public:
  explicit WrappedStore(Store& base) : base_(base) {}

  int fail_commit_at = 0;
  std::string corrupt_key;
  std::atomic<int> commits{0};
  std::atomic<int> opened{0};

  absl::Status CreateRun(const RunInfo& run) override { return base_.CreateRun(run); }
  absl::StatusOr<RunInfo> GetRun(std::string_view name) override { return base_.GetRun(name); }
  absl::StatusOr<std::vector<RunInfo>> ListRuns(std::string_view prefix) override {
    return base_.ListRuns(prefix);
  }
  absl::StatusOr<RunInfo> SealRun(std::string_view name, RunState state) override {
    return base_.SealRun(name, state);
  }
  absl::StatusOr<uint64_t> DeleteRun(std::string_view name) override {
    return base_.DeleteRun(name);
  }
  absl::StatusOr<RunInfo> SetRunReference(std::string_view name, bool reference) override {
    return base_.SetRunReference(name, reference);
  }
  absl::StatusOr<std::unique_ptr<TensorWriter>> BeginTensor(std::string_view run,
                                                            const TensorHeader& header) override {
    absl::StatusOr<std::unique_ptr<TensorWriter>> w = base_.BeginTensor(run, header);
    if (!w.ok()) return w;
    return std::unique_ptr<TensorWriter>(new Writer(*this, *std::move(w)));
  }
  absl::StatusOr<std::vector<TensorMeta>> ListTensors(std::string_view run,
                                                      std::string_view checkpoint) override {
    return base_.ListTensors(run, checkpoint);
  }
  absl::StatusOr<std::unique_ptr<TensorReader>> OpenTensor(std::string_view run,
                                                           const TensorAddress& address) override {
    absl::StatusOr<std::unique_ptr<TensorReader>> r = base_.OpenTensor(run, address);
    if (!r.ok()) return r;
    ++opened;
    return std::unique_ptr<TensorReader>(
        new Reader(*std::move(r), !corrupt_key.empty() && address.key == corrupt_key));
  }
  absl::Status PutReport(const StoredReport& report) override { return base_.PutReport(report); }
  absl::StatusOr<StoredReport> GetReport(std::string_view id) override {
    return base_.GetReport(id);
  }
  absl::StatusOr<std::vector<StoredReport>> ListReports(std::string_view run,
                                                        size_t limit) override {
    return base_.ListReports(run, limit);
  }
  absl::Status PutAuthRecord(std::string_view key, std::string_view value) override {
    return base_.PutAuthRecord(key, value);
  }
  absl::Status InsertAuthRecord(std::string_view key, std::string_view value) override {
    return base_.InsertAuthRecord(key, value);
  }
  absl::StatusOr<std::string> GetAuthRecord(std::string_view key) override {
    return base_.GetAuthRecord(key);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListAuthRecords(
      std::string_view prefix) override {
    return base_.ListAuthRecords(prefix);
  }

 private:
  class Writer : public TensorWriter {
   public:
    Writer(WrappedStore& store, std::unique_ptr<TensorWriter> base)
        : store_(store), base_(std::move(base)) {}
    absl::Status Append(absl::Span<const uint8_t> data) override { return base_->Append(data); }
    absl::StatusOr<CommitResult> Commit() override {
      if (++store_.commits == store_.fail_commit_at) {
        return absl::UnavailableError("injected: the connection dropped");
      }
      return base_->Commit();
    }

   private:
    WrappedStore& store_;
    std::unique_ptr<TensorWriter> base_;
  };

  class Reader : public TensorReader {
   public:
    Reader(std::unique_ptr<TensorReader> base, bool corrupt)
        : base_(std::move(base)), corrupt_(corrupt) {}
    const TensorMeta& meta() const override { return base_->meta(); }
    absl::Status Read(uint64_t offset, absl::Span<uint8_t> dst) override {
      absl::Status s = base_->Read(offset, dst);
      if (s.ok() && corrupt_ && offset == 0 && !dst.empty()) dst[0] ^= 0x40;
      return s;
    }

   private:
    std::unique_ptr<TensorReader> base_;
    bool corrupt_;
  };

  Store& base_;
};

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed * 31 + i * 7 + (i >> 8));
  return out;
}

TensorAddress Addr(std::string checkpoint, std::string key, std::optional<int64_t> step = {},
                   uint32_t rank = 0) {
  TensorAddress a;
  a.checkpoint = std::move(checkpoint);
  a.key = std::move(key);
  a.step = step;
  a.rank = rank;
  return a;
}

void Put(Store& store, const std::string& run, const TensorAddress& address, size_t n,
         uint8_t seed) {
  const std::vector<uint8_t> bytes = Bytes(n, seed);
  ASSERT_THAT(WriteInPieces(store, run, HeaderFor(address, bytes), bytes, 1000).status(), IsOk());
}

// Runs in every state (one with steps and ranks, one with a replaced tensor,
// an empty one), two reports with renderings, tokens and audit records.
// Returns the number of tensors.
uint64_t Fill(Store& store) {
  uint64_t tensors = 0;
  RunInfo a;
  a.name = "team42/bert-torch";
  a.framework = "torch";
  a.framework_version = "2.3.1";
  a.device = "cuda:0";
  a.labels = {{"paper", "bert"}, {"seed", "0"}};
  a.created = absl::FromUnixMicros(1764000000123456);
  a.owner = "tok-alice";
  a.reference = true;
  EXPECT_THAT(store.CreateRun(a), IsOk());
  // Written out of address order: sequence order must survive.
  Put(store, a.name, Addr("forward", "logits"), 5000, 1);
  Put(store, a.name, Addr("backward", "grad"), 123, 2);
  Put(store, a.name, Addr("forward", "empty"), 0, 3);
  for (int64_t step = 2; step >= 0; --step) {
    Put(store, a.name, Addr("loss", "loss", step), 4, static_cast<uint8_t>(10 + step));
    Put(store, a.name, Addr("loss", "loss", step, 1), 4, static_cast<uint8_t>(20 + step));
  }
  Put(store, a.name, Addr("alpha", "big"), 40000, 4);
  tensors += 10;
  EXPECT_THAT(store.SealRun(a.name, RunState::kSealed).status(), IsOk());

  RunInfo b;
  b.name = "team42/bert-paddle";
  b.framework = "paddle";
  b.overwrite = true;
  EXPECT_THAT(store.CreateRun(b), IsOk());
  Put(store, b.name, Addr("forward", "x"), 64, 5);
  Put(store, b.name, Addr("forward", "y"), 64, 6);
  Put(store, b.name, Addr("forward", "x"), 64, 7);  // replaced
  tensors += 2;                                     // still open

  RunInfo c;
  c.name = "team7/aborted";
  EXPECT_THAT(store.CreateRun(c), IsOk());
  Put(store, c.name, Addr("f", "k"), 9, 8);
  tensors += 1;
  EXPECT_THAT(store.SealRun(c.name, RunState::kAborted).status(), IsOk());

  RunInfo d;
  d.name = "team7/empty";
  EXPECT_THAT(store.CreateRun(d), IsOk());
  EXPECT_THAT(store.SealRun(d.name, RunState::kSealed).status(), IsOk());

  for (int i = 0; i < 2; ++i) {
    StoredReport r;
    r.id = absl::StrCat("rpt-000000000000000", i);
    r.ref = a.name;
    r.cand = b.name;
    r.policy = "competition";
    r.backend = "cpu";
    r.passed = i == 0;
    r.created = absl::FromUnixMicros(1764000001000000 + i);
    r.tensors = 10 + i;
    r.passed_tensors = 9;
    r.failed = 1;
    r.missing_in_cand = 2;
    if (i == 1) r.first_failure = Addr("loss", "loss", 1, 1);
    r.policy_hash = "ab12";
    r.renderings = {{"json", absl::StrCat("{\"i\": ", i, "}")}, {"text", "PASS"}};
    EXPECT_THAT(store.PutReport(r), IsOk());
  }
  EXPECT_THAT(store.PutAuthRecord("token/3f2a", "role=admin secret-ish"), IsOk());
  EXPECT_THAT(store.InsertAuthRecord("audit/00000000000000000001", "first"), IsOk());
  EXPECT_THAT(store.InsertAuthRecord("audit/00000000000000000002", "second"), IsOk());
  return tensors;
}

void ExpectSameRun(const RunInfo& x, const RunInfo& y) {
  EXPECT_EQ(x.name, y.name);
  EXPECT_EQ(x.framework, y.framework);
  EXPECT_EQ(x.framework_version, y.framework_version);
  EXPECT_EQ(x.device, y.device);
  EXPECT_EQ(x.labels, y.labels);
  EXPECT_EQ(x.created, y.created);
  EXPECT_EQ(x.owner, y.owner);
  EXPECT_EQ(x.state, y.state) << x.name;
  EXPECT_EQ(x.overwrite, y.overwrite);
  EXPECT_EQ(x.reference, y.reference);
  EXPECT_EQ(x.tensor_count, y.tensor_count);
  EXPECT_EQ(x.total_bytes, y.total_bytes);
}

// Everything `want` holds, `got` holds the same.
void ExpectSameContent(Store& want, Store& got) {
  absl::StatusOr<std::vector<RunInfo>> want_runs = want.ListRuns("");
  absl::StatusOr<std::vector<RunInfo>> got_runs = got.ListRuns("");
  ASSERT_THAT(want_runs.status(), IsOk());
  ASSERT_THAT(got_runs.status(), IsOk());
  ASSERT_EQ(want_runs->size(), got_runs->size());
  for (size_t i = 0; i < want_runs->size(); ++i) {
    const RunInfo& run = (*want_runs)[i];
    ExpectSameRun(run, (*got_runs)[i]);
    absl::StatusOr<std::vector<TensorMeta>> wt = want.ListTensors(run.name);
    absl::StatusOr<std::vector<TensorMeta>> gt = got.ListTensors(run.name);
    ASSERT_THAT(wt.status(), IsOk());
    ASSERT_THAT(gt.status(), IsOk());
    ASSERT_EQ(wt->size(), gt->size()) << run.name;
    for (size_t j = 0; j < wt->size(); ++j) {
      const TensorHeader& w = (*wt)[j].header;
      const TensorHeader& g = (*gt)[j].header;
      EXPECT_EQ(w.address, g.address) << run.name << " #" << j;
      EXPECT_EQ(w.dtype, g.dtype);
      EXPECT_EQ(w.shape, g.shape);
      EXPECT_EQ(w.byte_length, g.byte_length);
      EXPECT_EQ(w.crc32c, g.crc32c);
      absl::StatusOr<std::vector<uint8_t>> wb = ReadAll(want, run.name, w.address);
      absl::StatusOr<std::vector<uint8_t>> gb = ReadAll(got, run.name, g.address);
      ASSERT_THAT(wb.status(), IsOk());
      ASSERT_THAT(gb.status(), IsOk());
      EXPECT_EQ(*wb, *gb) << run.name << " " << AddressToString(w.address);
    }
  }
  absl::StatusOr<std::vector<StoredReport>> wr = want.ListReports("", 100);
  absl::StatusOr<std::vector<StoredReport>> gr = got.ListReports("", 100);
  ASSERT_THAT(wr.status(), IsOk());
  ASSERT_THAT(gr.status(), IsOk());
  ASSERT_EQ(wr->size(), gr->size());
  for (size_t i = 0; i < wr->size(); ++i) {
    absl::StatusOr<StoredReport> w = want.GetReport((*wr)[i].id);
    absl::StatusOr<StoredReport> g = got.GetReport((*wr)[i].id);
    ASSERT_THAT(w.status(), IsOk());
    ASSERT_THAT(g.status(), IsOk());
    EXPECT_EQ(w->ref, g->ref);
    EXPECT_EQ(w->cand, g->cand);
    EXPECT_EQ(w->policy, g->policy);
    EXPECT_EQ(w->backend, g->backend);
    EXPECT_EQ(w->passed, g->passed);
    EXPECT_EQ(w->created, g->created);
    EXPECT_EQ(w->tensors, g->tensors);
    EXPECT_EQ(w->passed_tensors, g->passed_tensors);
    EXPECT_EQ(w->failed, g->failed);
    EXPECT_EQ(w->missing_in_cand, g->missing_in_cand);
    EXPECT_EQ(w->first_failure, g->first_failure);
    EXPECT_EQ(w->policy_hash, g->policy_hash);
    EXPECT_EQ(w->renderings, g->renderings);
    EXPECT_FALSE(g->renderings.empty());
  }
  auto wa = want.ListAuthRecords("");
  auto ga = got.ListAuthRecords("");
  ASSERT_THAT(wa.status(), IsOk());
  ASSERT_THAT(ga.status(), IsOk());
  EXPECT_EQ(*wa, *ga);
  EXPECT_EQ(wa->size(), 3u);
}

class MigrateTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "rocksdb") {
      dir_ = std::filesystem::path(::testing::TempDir()) /
             absl::StrCat("migrate_test_", ::testing::UnitTest::GetInstance()->random_seed(), "_",
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
      std::filesystem::remove_all(dir_);
      RocksDbStoreOptions options;
      options.segment_tensor_bytes = 10000;  // "alpha/big" goes to a segment file
      options.min_free_bytes = 0;
      absl::StatusOr<std::unique_ptr<Store>> opened = OpenRocksDbStore(dir_.string(), options);
      ASSERT_THAT(opened.status(), IsOk());
      source_ = *std::move(opened);
    } else {
      source_ = CreateMemoryStore();
    }
    total_ = Fill(*source_);
  }
  void TearDown() override {
    source_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  MigrateOptions Options() {
    MigrateOptions options;
    options.window_bytes = 4096;  // several windows per larger tensor
    options.parallel_runs = 1;    // commits counted in a fixed order
    return options;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Store> source_;
  uint64_t total_ = 0;
};

TEST_P(MigrateTest, CopiesEverythingThenSkipsEverything) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  std::vector<MigrateProgress> seen;
  MigrateOptions options = Options();
  options.progress = [&](const MigrateProgress& p) { seen.push_back(p); };
  absl::StatusOr<MigrateStats> stats = MigrateStore(*source_, *dest, options);
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->runs, 4u);
  EXPECT_EQ(stats->tensors_copied, total_);
  EXPECT_EQ(stats->tensors_skipped, 0u);
  EXPECT_EQ(stats->tensors_verified, total_);
  // 5000 + 123 + 0 + 6 * 4 + 40000, 2 * 64, 9
  EXPECT_EQ(stats->bytes_copied, 45147u + 128u + 9u);
  EXPECT_EQ(stats->reports_copied, 2u);
  EXPECT_EQ(stats->auth_records_copied, 3u);
  ExpectSameContent(*source_, *dest);
  // One call per run before its tensors, one per tensor, one per tensor
  // verified.
  ASSERT_EQ(seen.size(), 4u + 2 * total_);
  const MigrateProgress& copied = seen[4 + total_ - 1];
  EXPECT_FALSE(copied.verifying);
  EXPECT_EQ(copied.tensors_done, total_);
  EXPECT_EQ(copied.tensors_total, total_);
  EXPECT_EQ(copied.run_index, 4u);
  EXPECT_EQ(copied.run_count, 4u);
  EXPECT_TRUE(seen.back().verifying);
  EXPECT_EQ(seen.back().tensors_verified, total_);
  EXPECT_EQ(seen.back().tensors_to_verify, total_);

  // Again: nothing copied, no source tensor opened, all verified.
  WrappedStore counted(*source_);
  stats = MigrateStore(counted, *dest, Options());
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->tensors_copied, 0u);
  EXPECT_EQ(stats->bytes_copied, 0u);
  EXPECT_EQ(stats->tensors_skipped, total_);
  EXPECT_EQ(stats->tensors_verified, total_);
  EXPECT_EQ(stats->runs_skipped, 3u);  // the open run is revisited, not complete
  EXPECT_EQ(stats->reports_copied, 0u);
  EXPECT_EQ(stats->reports, 2u);
  EXPECT_EQ(stats->auth_records_copied, 0u);
  EXPECT_EQ(counted.opened.load(), 0);
  ExpectSameContent(*source_, *dest);

  // Without verify no destination tensor is read either.
  WrappedStore dest_counted(*dest);
  MigrateOptions no_verify = Options();
  no_verify.verify = false;
  stats = MigrateStore(*source_, dest_counted, no_verify);
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->tensors_verified, 0u);
  EXPECT_EQ(dest_counted.opened.load(), 0);
}

TEST_P(MigrateTest, RunsInParallelAndResumes) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  MigrateOptions options = Options();
  options.parallel_runs = 3;
  uint64_t last_done = 0;
  bool monotonic = true;
  options.progress = [&](const MigrateProgress& p) {
    if (p.verifying) return;
    monotonic = monotonic && p.tensors_done >= last_done;
    last_done = p.tensors_done;
  };
  {
    WrappedStore flaky(*dest);
    flaky.fail_commit_at = 6;
    EXPECT_THAT(MigrateStore(*source_, flaky, options).status(),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
  }
  EXPECT_TRUE(monotonic);
  last_done = 0;
  absl::StatusOr<MigrateStats> stats = MigrateStore(*source_, *dest, options);
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->runs, 4u);
  EXPECT_GE(stats->tensors_skipped, 1u);  // 5 commits went through before
  EXPECT_EQ(stats->tensors_copied + stats->tensors_skipped, total_);
  EXPECT_EQ(stats->tensors_verified, total_);
  EXPECT_EQ(last_done, total_);
  EXPECT_TRUE(monotonic);
  ExpectSameContent(*source_, *dest);
}

TEST_P(MigrateTest, ResumesAfterAnInterruption) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  // Runs go in name order: team42/bert-paddle (2 tensors, open),
  // team42/bert-torch (10, sealed), team7/aborted (1), team7/empty (0).
  // The first try stops at torch's 2nd tensor, the second (skipping those 3)
  // at torch's 8th.
  for (int fail_at : {4, 7}) {
    WrappedStore flaky(*dest);
    flaky.fail_commit_at = fail_at;
    absl::StatusOr<MigrateStats> stats = MigrateStore(*source_, flaky, Options());
    ASSERT_THAT(stats.status(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
    EXPECT_THAT(stats.status().message(), HasSubstr("copying run team42/bert-torch, tensor "));
  }
  absl::StatusOr<RunInfo> partial = dest->GetRun("team42/bert-torch");
  ASSERT_THAT(partial.status(), IsOk());
  EXPECT_EQ(partial->state, RunState::kOpen);
  EXPECT_EQ(partial->tensor_count, 7u);

  absl::StatusOr<MigrateStats> stats = MigrateStore(*source_, *dest, Options());
  ASSERT_THAT(stats.status(), IsOk());
  EXPECT_EQ(stats->tensors_skipped, 9u);
  EXPECT_EQ(stats->tensors_copied, total_ - 9u);
  EXPECT_EQ(stats->tensors_verified, total_);
  ExpectSameContent(*source_, *dest);
}

TEST_P(MigrateTest, RefusesAConflictingDestinationRun) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  RunInfo other;
  other.name = "team42/bert-torch";
  other.framework = "torch";
  other.framework_version = "2.3.1";
  other.device = "cpu";  // the source's is cuda:0
  ASSERT_THAT(dest->CreateRun(other), IsOk());
  EXPECT_THAT(MigrateStore(*source_, *dest, Options()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("team42/bert-torch"), HasSubstr("device"))));
}

TEST_P(MigrateTest, RefusesADestinationRunWithOtherTensors) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  absl::StatusOr<RunInfo> src = source_->GetRun("team42/bert-paddle");
  ASSERT_THAT(src.status(), IsOk());
  RunInfo same = *src;
  same.state = RunState::kOpen;
  ASSERT_THAT(dest->CreateRun(same), IsOk());
  // The source's order is forward/y, then forward/x (replaced after y).
  // Same address, other bytes:
  Put(*dest, same.name, Addr("forward", "y"), 64, 99);
  EXPECT_THAT(MigrateStore(*source_, *dest, Options()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("team42/bert-paddle"), HasSubstr("forward/y"),
                                        HasSubstr("#0"), HasSubstr("other content"))));
  // The source's own bytes, but out of order:
  std::unique_ptr<Store> reordered = CreateMemoryStore();
  ASSERT_THAT(reordered->CreateRun(same), IsOk());
  Put(*reordered, same.name, Addr("forward", "x"), 64, 7);
  EXPECT_THAT(MigrateStore(*source_, *reordered, Options()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("tensor forward/y"),
                                        HasSubstr("destination forward/x"), HasSubstr("#0"))));
  // Nothing was copied into a refused run.
  absl::StatusOr<std::vector<TensorMeta>> left = reordered->ListTensors(same.name, "");
  ASSERT_THAT(left.status(), IsOk());
  EXPECT_EQ(left->size(), 1u);
}

TEST_P(MigrateTest, RefusesASealedDestinationRunMissingTensors) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  absl::StatusOr<RunInfo> src = source_->GetRun("team42/bert-torch");
  ASSERT_THAT(src.status(), IsOk());
  ASSERT_THAT(dest->CreateRun(*src), IsOk());
  Put(*dest, src->name, Addr("forward", "logits"), 5000, 1);  // the source's first
  ASSERT_THAT(dest->SealRun(src->name, RunState::kSealed).status(), IsOk());
  EXPECT_THAT(MigrateStore(*source_, *dest, Options()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("team42/bert-torch"), HasSubstr("sealed"),
                                        HasSubstr("1 of the source's 10"))));
}

TEST_P(MigrateTest, RefusesADifferentAuthRecordWithoutShowingIt) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  ASSERT_THAT(dest->PutAuthRecord("token/3f2a", "role=submitter"), IsOk());
  absl::Status s = MigrateStore(*source_, *dest, Options()).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("10 bytes")));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("3f2a")));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("role=")));
}

TEST_P(MigrateTest, VerifyCatchesACorruptedDestinationTensor) {
  std::unique_ptr<Store> dest = CreateMemoryStore();
  WrappedStore corrupt(*dest);
  corrupt.corrupt_key = "big";
  EXPECT_THAT(MigrateStore(*source_, corrupt, Options()).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr("team42/bert-torch"), HasSubstr("alpha/big"),
                                        HasSubstr("crc32c"))));
  // A rerun verifies skipped tensors too: the damage is still found.
  EXPECT_THAT(MigrateStore(*source_, corrupt, Options()).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("alpha/big")));
  // The store's bytes themselves are fine: an honest reader passes.
  EXPECT_THAT(MigrateStore(*source_, *dest, Options()).status(), IsOk());
}

INSTANTIATE_TEST_SUITE_P(Stores, MigrateTest, ::testing::Values("memory", "rocksdb"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace reprod::storage
