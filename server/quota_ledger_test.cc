// QuotaLedger against the memory store: concurrent reservations never pass
// a limit (the store's own run byte counts are the oracle), replace /
// already-present / delete accounting, start-up from the store, and tokens'
// own quotas.
#include "server/quota_ledger.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/token.h"
#include "storage/memory/memory_store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server {
namespace {

using ::reprod::storage::CommitKind;
using ::reprod::storage::CommitResult;
using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

storage::RunInfo MakeRun(const std::string& name, bool overwrite = false) {
  storage::RunInfo run;
  run.name = name;
  run.framework = "test";
  run.overwrite = overwrite;
  return run;
}

// Bytes the store holds in runs starting with `prefix` (the oracle).
uint64_t StoreBytes(storage::Store& store, const std::string& prefix = "") {
  absl::StatusOr<std::vector<storage::RunInfo>> runs = store.ListRuns(prefix);
  EXPECT_THAT(runs.status(), IsOk());
  uint64_t total = 0;
  for (const storage::RunInfo& r : *runs) total += r.total_bytes;
  return total;
}

auth::Principal Submitter(const std::string& ns, std::optional<uint64_t> quota) {
  auth::Principal p;
  p.id = "0123456789ab";
  p.label = ns + " CI";
  p.role = auth::Role::kSubmitter;
  p.scope = *auth::Scope::Parse(ns);
  p.quota_bytes = quota;
  return p;
}

// Reserves, writes and commits one tensor the way ingest does.
absl::StatusOr<CommitResult> Push(QuotaLedger& ledger, storage::Store& store,
                                  const std::string& run, const std::string& key,
                                  const std::vector<uint8_t>& bytes,
                                  const auth::Principal* who = nullptr) {
  absl::StatusOr<QuotaLedger::Reservation> r = ledger.Reserve(run, who, bytes.size());
  if (!r.ok()) return r.status();
  const storage::TensorHeader header = HeaderFor({"ck", key, std::nullopt}, bytes);
  absl::StatusOr<CommitResult> done = WriteInPieces(store, run, header, bytes, 64);
  if (done.ok()) r->Commit(*done);
  return done;
}

TEST(QuotaLedgerTest, ConcurrentPushesNeverPassTheLimits) {
  constexpr uint64_t kTotal = 40'000, kPerNamespace = 12'000;
  auto store = storage::CreateMemoryStore();
  QuotaLedger ledger({.quota_bytes = kTotal, .namespace_quota_bytes = kPerNamespace});
  constexpr int kThreads = 16;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_THAT(store->CreateRun(MakeRun(absl::StrCat("ns", t % 4, "/r", t))), IsOk());
  }
  std::atomic<uint64_t> granted{0}, refused{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (++ready; ready < kThreads;) std::this_thread::yield();  // start together
      const std::string run = absl::StrCat("ns", t % 4, "/r", t);
      int refusals_in_a_row = 0;
      for (int i = 0; refusals_in_a_row < 20; ++i) {
        const std::vector<uint8_t> bytes(100 + (t * 37 + i * 53) % 700, static_cast<uint8_t>(i));
        absl::StatusOr<CommitResult> done =
            Push(ledger, *store, run, absl::StrCat("k", i), bytes);
        if (done.ok()) {
          granted += bytes.size();
          refusals_in_a_row = 0;
        } else {
          EXPECT_EQ(done.status().code(), absl::StatusCode::kResourceExhausted) << done.status();
          ++refused;
          ++refusals_in_a_row;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_GT(refused.load(), 0u);
  // The store's own counts: within every limit, and equal to the ledger's.
  EXPECT_EQ(StoreBytes(*store), granted.load());
  EXPECT_LE(StoreBytes(*store), kTotal);
  for (int n = 0; n < 4; ++n) {
    const std::string ns = absl::StrCat("ns", n);
    EXPECT_LE(StoreBytes(*store, ns + "/"), kPerNamespace) << ns;
    EXPECT_EQ(ledger.Namespace(ns).stored, StoreBytes(*store, ns + "/")) << ns;
    EXPECT_EQ(ledger.Namespace(ns).reserved, 0u) << ns;
  }
  // Every thread stopped only after refusals, and the four namespaces'
  // limits together (48,000) exceed the server's: the server is nearly full
  // (less than the largest tensor, 799 bytes, left).
  EXPECT_GT(StoreBytes(*store), kTotal - 800);
  EXPECT_EQ(ledger.Total().stored, granted.load());
  EXPECT_EQ(ledger.Total().reserved, 0u);
}

TEST(QuotaLedgerTest, ConcurrentReservationsHeldAtOnceStayWithinTheLimit) {
  // 16 threads reserve against one limit while holding every grant: the sum
  // of what was granted, committed or not, never passes it.
  constexpr uint64_t kLimit = 10'000;
  QuotaLedger ledger({.quota_bytes = kLimit});
  std::atomic<uint64_t> held{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  std::vector<std::vector<QuotaLedger::Reservation>> kept(16);
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (++ready; ready < 16;) std::this_thread::yield();  // start together
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<QuotaLedger::Reservation> r =
            ledger.Reserve(absl::StrCat("t", t, "/r"), nullptr, 1 + (t * 31 + i * 17) % 97);
        if (r.ok()) {
          held += r->bytes();
          kept[t].push_back(*std::move(r));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(held.load(), kLimit);
  EXPECT_GT(held.load(), kLimit - 97);
  EXPECT_EQ(ledger.Total().reserved, held.load());
  EXPECT_EQ(ledger.Total().stored, 0u);
  kept.clear();  // released, never committed: nothing stored, nothing held
  EXPECT_EQ(ledger.Total().reserved, 0u);
  EXPECT_EQ(ledger.Total().stored, 0u);
  EXPECT_THAT(ledger.Reserve("t0/r", nullptr, kLimit).status(), IsOk());
}

TEST(QuotaLedgerTest, RefusalNamesTheLimitNamespaceAndBytes) {
  QuotaLedger ledger({.quota_bytes = 1000, .namespace_quota_bytes = 600});
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation a, ledger.Reserve("qa/r1", nullptr, 400));
  a.Commit(CommitResult{CommitKind::kStored, 0});
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation b, ledger.Reserve("qa/r2", nullptr, 150));
  EXPECT_THAT(ledger.Reserve("qa/r1", nullptr, 51),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("namespace 'qa' stores 400 bytes, 150 more in flight; "
                                       "51 more would pass its 600-byte limit "
                                       "(--namespace-quota-bytes)"))));
  EXPECT_THAT(ledger.Reserve("qa/r1", nullptr, 50).status(), IsOk());  // exactly 600
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation c, ledger.Reserve("qb/r", nullptr, 450));
  EXPECT_THAT(ledger.Reserve("qc/r", nullptr, 1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("the server stores 400 bytes, 600 more in flight; 1 more would "
                                 "pass its 1000-byte limit (--quota-bytes)")));
}

TEST(QuotaLedgerTest, ReplaceFreesTheOldSizeAndAlreadyPresentAddsNothing) {
  auto store = storage::CreateMemoryStore();
  QuotaLedger ledger({.quota_bytes = 100});
  const std::string run = "team/over";
  ASSERT_THAT(store->CreateRun(MakeRun(run, /*overwrite=*/true)), IsOk());
  ASSERT_OK_AND_ASSIGN(CommitResult done,
                       Push(ledger, *store, run, "k", std::vector<uint8_t>(60, 1)));
  EXPECT_EQ(done.kind, CommitKind::kStored);
  ASSERT_OK_AND_ASSIGN(done, Push(ledger, *store, run, "k", std::vector<uint8_t>(25, 2)));
  ASSERT_EQ(done.kind, CommitKind::kReplaced);
  EXPECT_EQ(ledger.Total().stored, 25u);
  EXPECT_EQ(StoreBytes(*store), 25u);
  ASSERT_OK_AND_ASSIGN(done, Push(ledger, *store, run, "k", std::vector<uint8_t>(25, 2)));
  ASSERT_EQ(done.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(ledger.Total().stored, 25u);
  ASSERT_OK_AND_ASSIGN(done, Push(ledger, *store, run, "k", std::vector<uint8_t>(70, 3)));
  ASSERT_EQ(done.kind, CommitKind::kReplaced);
  EXPECT_EQ(ledger.Total().stored, 70u);
  EXPECT_EQ(StoreBytes(*store), 70u);
  EXPECT_EQ(ledger.Namespace("team").stored, 70u);
  EXPECT_EQ(ledger.Total().reserved, 0u);
}

TEST(QuotaLedgerTest, DeletingARunGivesItsBytesBack) {
  auto store = storage::CreateMemoryStore();
  QuotaLedger ledger({.namespace_quota_bytes = 100});
  ASSERT_THAT(store->CreateRun(MakeRun("a/one")), IsOk());
  ASSERT_THAT(store->CreateRun(MakeRun("a/two")), IsOk());
  ASSERT_THAT(Push(ledger, *store, "a/one", "x", std::vector<uint8_t>(70)).status(), IsOk());
  ASSERT_THAT(Push(ledger, *store, "a/two", "x", std::vector<uint8_t>(20)).status(), IsOk());
  EXPECT_THAT(Push(ledger, *store, "a/two", "y", std::vector<uint8_t>(20)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("quota: ")));
  ASSERT_THAT(store->DeleteRun("a/one").status(), IsOk());
  ledger.RunDeleted("a/one");
  EXPECT_EQ(ledger.Namespace("a").stored, 20u);
  EXPECT_THAT(Push(ledger, *store, "a/two", "y", std::vector<uint8_t>(80)).status(), IsOk());
  EXPECT_EQ(ledger.Namespace("a").stored, StoreBytes(*store, "a/"));
}

TEST(QuotaLedgerTest, NamespacesListsEveryNamespaceWithBytes) {
  auto store = storage::CreateMemoryStore();
  QuotaLedger ledger({});
  for (const char* run : {"a/one", "a/two", "b/one"}) {
    ASSERT_THAT(store->CreateRun(MakeRun(run)), IsOk());
  }
  ASSERT_THAT(Push(ledger, *store, "a/one", "x", std::vector<uint8_t>(7)).status(), IsOk());
  ASSERT_THAT(Push(ledger, *store, "a/two", "x", std::vector<uint8_t>(5)).status(), IsOk());
  ASSERT_THAT(Push(ledger, *store, "b/one", "x", std::vector<uint8_t>(3)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation held, ledger.Reserve("c/new", nullptr, 9));
  const auto all = ledger.Namespaces();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.at("a").stored, StoreBytes(*store, "a/"));
  EXPECT_EQ(all.at("a").stored, 12u);
  EXPECT_EQ(all.at("b").stored, 3u);
  EXPECT_EQ(all.at("c").stored, 0u);
  EXPECT_EQ(all.at("c").reserved, 9u);
  ASSERT_THAT(store->DeleteRun("b/one").status(), IsOk());
  ledger.RunDeleted("b/one");
  EXPECT_FALSE(ledger.Namespaces().contains("b"));
}

TEST(QuotaLedgerTest, ATensorOfARunDeletedWhileInFlightAddsNothing) {
  auto store = storage::CreateMemoryStore();
  QuotaLedger ledger({});
  ASSERT_THAT(store->CreateRun(MakeRun("a/r")), IsOk());
  ASSERT_THAT(Push(ledger, *store, "a/r", "x", std::vector<uint8_t>(10)).status(), IsOk());
  // Committed by the store, then the run is deleted before the ledger hears
  // of the commit.
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation late, ledger.Reserve("a/r", nullptr, 30));
  const std::vector<uint8_t> bytes(30, 7);
  ASSERT_OK_AND_ASSIGN(
      CommitResult done,
      WriteInPieces(*store, "a/r", HeaderFor({"ck", "y", std::nullopt}, bytes), bytes, 8));
  ASSERT_THAT(store->DeleteRun("a/r").status(), IsOk());
  ledger.RunDeleted("a/r");
  // A new run of the same name gets its own account.
  ASSERT_THAT(store->CreateRun(MakeRun("a/r")), IsOk());
  ASSERT_THAT(Push(ledger, *store, "a/r", "z", std::vector<uint8_t>(5)).status(), IsOk());
  late.Commit(done);
  EXPECT_EQ(ledger.Total().stored, 5u);
  EXPECT_EQ(StoreBytes(*store), 5u);
  EXPECT_EQ(ledger.Total().reserved, 0u);
  // Deleted before the commit: the store refuses it and the bytes go back.
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation gone, ledger.Reserve("a/r", nullptr, 8));
  ASSERT_OK_AND_ASSIGN(auto writer,
                       store->BeginTensor("a/r", HeaderFor({"ck", "w", std::nullopt},
                                                           std::vector<uint8_t>(8))));
  ASSERT_THAT(store->DeleteRun("a/r").status(), IsOk());
  ledger.RunDeleted("a/r");
  ASSERT_THAT(writer->Append(std::vector<uint8_t>(8)), IsOk());
  EXPECT_THAT(writer->Commit().status(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("a/r")));
  { QuotaLedger::Reservation dropped = std::move(gone); }
  EXPECT_EQ(ledger.Total().stored, 0u);
  EXPECT_EQ(ledger.Total().reserved, 0u);
}

TEST(QuotaLedgerTest, CreateReadsWhatTheStoreHolds) {
  auto store = storage::CreateMemoryStore();
  QuotaLedger first({});
  for (const char* run : {"a/1", "a/2", "b/1", "c/empty"}) {
    ASSERT_THAT(store->CreateRun(MakeRun(run)), IsOk());
  }
  ASSERT_THAT(Push(first, *store, "a/1", "x", std::vector<uint8_t>(11)).status(), IsOk());
  ASSERT_THAT(Push(first, *store, "a/2", "x", std::vector<uint8_t>(13)).status(), IsOk());
  ASSERT_THAT(Push(first, *store, "b/1", "x", std::vector<uint8_t>(17)).status(), IsOk());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<QuotaLedger> ledger,
                       QuotaLedger::Create(*store, {.quota_bytes = 50}));
  EXPECT_EQ(ledger->Total().stored, 41u);
  EXPECT_EQ(ledger->Namespace("a").stored, 24u);
  EXPECT_EQ(ledger->Namespace("b").stored, 17u);
  EXPECT_EQ(ledger->Namespace("c").stored, 0u);
  EXPECT_THAT(ledger->Reserve("c/empty", nullptr, 10),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("stores 41 bytes")));
  ASSERT_THAT(store->DeleteRun("a/2").status(), IsOk());
  ledger->RunDeleted("a/2");
  EXPECT_EQ(ledger->Total().stored, 28u);
  EXPECT_THAT(ledger->Reserve("c/empty", nullptr, 22).status(), IsOk());
}

TEST(QuotaLedgerTest, ASubmitterTokensQuotaReplacesTheNamespaceLimit) {
  QuotaLedger ledger({.quota_bytes = 10'000, .namespace_quota_bytes = 100});
  const auth::Principal more = Submitter("team", 500), less = Submitter("team", 40),
                        unlimited = Submitter("team", 0), plain = Submitter("team", std::nullopt);
  ASSERT_OK_AND_ASSIGN(QuotaLedger::Reservation r, ledger.Reserve("team/a", &more, 300));
  r.Commit(CommitResult{});
  EXPECT_THAT(ledger.Reserve("team/a", &plain, 1),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("its 100-byte limit (--namespace-quota-bytes)")));
  EXPECT_THAT(ledger.Reserve("team/a", &more, 201),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("namespace 'team' stores 300 bytes, 0 more in flight; 201 more "
                                 "would pass the 500-byte limit of token 'team CI' (its "
                                 "--quota-bytes)")));
  EXPECT_THAT(ledger.Reserve("team/a", &more, 200).status(), IsOk());
  EXPECT_THAT(ledger.Reserve("fresh/a", &less, 41).status(), IsOk());  // not its namespace
  EXPECT_THAT(ledger.Reserve("team/b", &less, 1),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("40-byte limit")));
  EXPECT_THAT(ledger.Reserve("team/b", &unlimited, 9000).status(), IsOk());
  // --quota-bytes still holds for every token.
  EXPECT_THAT(ledger.Reserve("team/b", &unlimited, 10'000),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("(--quota-bytes)")));
}

}  // namespace
}  // namespace reprod::server
