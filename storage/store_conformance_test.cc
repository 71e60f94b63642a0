// One behavioural suite run against every Store implementation: the memory
// store and the RocksDB store (default chunks, and 7-byte chunks so that
// every tensor spans many chunk boundaries).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "common/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/memory/memory_store.h"
#include "storage/postgres_s3/postgres_s3_store.h"
#include "storage/rocksdb/rocksdb_store.h"
#include "storage/store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::storage {
namespace {

using ::reprod::storage::testing::HeaderFor;
using ::reprod::storage::testing::WriteInPieces;
using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

struct Backend {
  std::string name;
  // Opens a store whose files (if any) live under `dir`.
  std::function<absl::StatusOr<std::unique_ptr<Store>>(const std::string&)>
      open;
  // Why the backend cannot run here (the test is skipped saying so); empty
  // when it can.
  std::function<std::string()> unavailable = [] { return std::string(); };
};

// gtest prints a parameter by its name, not its bytes.
void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// The postgres+s3 store against servers the test runner started
// (tests/python/test_store_postgres_s3.py starts PostgreSQL 15 and Ceph
// radosgw and passes them in REPROD_TEST_PG_URL and REPROD_TEST_S3_*).
// Every store gets a schema and an object prefix of its own, named after
// its temporary folder, so tests do not see each other's runs.
absl::StatusOr<std::unique_ptr<Store>> OpenPostgresS3ForTest(
    const std::string& dir, uint64_t part_size) {
  std::string name = std::filesystem::path(dir).filename().string();
  for (char& c : name) c = static_cast<char>(std::tolower(c));
  PostgresS3StoreOptions options;
  options.pg_url = Env("REPROD_TEST_PG_URL");
  options.pg_schema = name;
  options.s3.endpoint = Env("REPROD_TEST_S3_ENDPOINT");
  options.s3.access_key = Env("REPROD_TEST_S3_ACCESS_KEY");
  options.s3.secret_key = Env("REPROD_TEST_S3_SECRET_KEY");
  if (!Env("REPROD_TEST_S3_REGION").empty()) {
    options.s3.region = Env("REPROD_TEST_S3_REGION");
  }
  options.s3.bucket = "reprod-conformance";
  options.s3_prefix = name + "/";
  options.part_size = part_size;
  options.block_size = 7;  // many blocks per tensor, as RocksDbChunk7
  options.pg_connections = 4;
  return OpenPostgresS3Store(options);
}

std::string PostgresS3Unavailable() {
  if (Env("REPROD_TEST_PG_URL").empty() ||
      Env("REPROD_TEST_S3_ENDPOINT").empty()) {
    return "REPROD_TEST_PG_URL / REPROD_TEST_S3_ENDPOINT not set: "
           "tests/python/test_store_postgres_s3.py runs this suite against "
           "a real PostgreSQL and Ceph radosgw";
  }
  return {};
}

std::vector<Backend> Backends() {
  return {
      {"Memory",
       [](const std::string&) -> absl::StatusOr<std::unique_ptr<Store>> {
         return CreateMemoryStore();
       }},
      {"RocksDb",
       [](const std::string& dir) {
         RocksDbStoreOptions options;
         options.sync_commits = false;  // tmpfs or not: tests need no fsync
         return OpenRocksDbStore(dir, options);
       }},
      {"RocksDbChunk7",
       [](const std::string& dir) {
         RocksDbStoreOptions options;
         options.chunk_size = 7;
         options.sync_commits = false;
         return OpenRocksDbStore(dir, options);
       }},
      // Every non-empty tensor in a segment file of its own.
      {"RocksDbSegments",
       [](const std::string& dir) {
         RocksDbStoreOptions options;
         options.segment_tensor_bytes = 1;
         options.sync_commits = false;
         return OpenRocksDbStore(dir, options);
       }},
      // Tensors in one PUT (every tensor here is far below 5 MiB).
      {"PostgresS3",
       [](const std::string& dir) {
         return OpenPostgresS3ForTest(dir, uint64_t{16} << 20);
       },
       PostgresS3Unavailable},
      // The smallest part size S3 allows: LargeTensorInUnevenAppends and
      // the multipart tests below go up in several parts.
      {"PostgresS3Multipart",
       [](const std::string& dir) {
         return OpenPostgresS3ForTest(dir, uint64_t{5} << 20);
       },
       PostgresS3Unavailable},
  };
}

std::vector<uint8_t> Bytes(size_t n, uint8_t seed = 1) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 31);
  return out;
}

TensorAddress Addr(std::string checkpoint, std::string key,
                   std::optional<int64_t> step = std::nullopt) {
  return TensorAddress{std::move(checkpoint), std::move(key), step};
}

RunInfo MakeRun(std::string name, bool overwrite = false) {
  RunInfo run;
  run.name = std::move(name);
  run.framework = "paddle";
  run.framework_version = "2.6.0";
  run.device = "gpu:0";
  run.labels = {{"model", "bert"}, {"seed", "42"}};
  run.owner = "alice";
  run.overwrite = overwrite;
  return run;
}

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (std::string why = GetParam().unavailable(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "store_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_OK_AND_ASSIGN(store_, GetParam().open(dir_));
    ASSERT_THAT(store_->CreateRun(MakeRun(kRun)), IsOk());
  }

  void TearDown() override {
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Writes `bytes` under `header` in appends of `piece` bytes, then commits.
  absl::StatusOr<CommitResult> Write(std::string_view run,
                                     const TensorHeader& header,
                                     const std::vector<uint8_t>& bytes,
                                     size_t piece = 5) {
    return WriteInPieces(*store_, run, header, bytes, piece);
  }

  absl::StatusOr<CommitResult> Write(std::string_view run,
                                     const TensorAddress& address,
                                     const std::vector<uint8_t>& bytes) {
    return Write(run, HeaderFor(address, bytes), bytes);
  }

  absl::StatusOr<std::vector<uint8_t>> ReadAll(std::string_view run,
                                               const TensorAddress& address) {
    return storage::testing::ReadAll(*store_, run, address);
  }

  std::vector<std::string> Keys(std::string_view run,
                                std::string_view checkpoint = {}) {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<TensorMeta>> list =
        store_->ListTensors(run, checkpoint);
    EXPECT_THAT(list, IsOk());
    if (!list.ok()) return out;
    for (const TensorMeta& m : *list) {
      out.push_back(AddressToString(m.header.address));
    }
    return out;
  }

  static constexpr char kRun[] = "team42/bert-paddle";
  std::string dir_;
  std::unique_ptr<Store> store_;
};

// --- runs -------------------------------------------------------------------

TEST_P(StoreTest, CreateAndGetRunRoundTrips) {
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  const RunInfo want = MakeRun(kRun);
  EXPECT_EQ(run.name, want.name);
  EXPECT_EQ(run.framework, "paddle");
  EXPECT_EQ(run.framework_version, "2.6.0");
  EXPECT_EQ(run.device, "gpu:0");
  EXPECT_EQ(run.labels, want.labels);
  EXPECT_EQ(run.owner, "alice");
  EXPECT_EQ(run.state, RunState::kOpen);
  EXPECT_FALSE(run.overwrite);
  EXPECT_EQ(run.tensor_count, 0u);
  EXPECT_EQ(run.total_bytes, 0u);
  EXPECT_GT(run.created, absl::Now() - absl::Minutes(5));
}

TEST_P(StoreTest, CreateRunKeepsGivenTimeAndResetsState) {
  RunInfo in = MakeRun("team42/given", /*overwrite=*/true);
  in.created = absl::FromUnixMicros(1700000000123456);
  in.state = RunState::kSealed;
  in.tensor_count = 9;
  in.total_bytes = 99;
  ASSERT_THAT(store_->CreateRun(in), IsOk());
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun("team42/given"));
  EXPECT_EQ(run.created, in.created);
  EXPECT_EQ(run.state, RunState::kOpen);
  EXPECT_TRUE(run.overwrite);
  EXPECT_EQ(run.tensor_count, 0u);
  EXPECT_EQ(run.total_bytes, 0u);
}

TEST_P(StoreTest, CreateRunTwiceIsAlreadyExists) {
  EXPECT_THAT(store_->CreateRun(MakeRun(kRun)),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(kRun)));
}

TEST_P(StoreTest, UnknownRunIsNotFound) {
  EXPECT_THAT(store_->GetRun("team42/nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
  EXPECT_THAT(store_->SealRun("team42/nope", RunState::kSealed),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
  EXPECT_THAT(store_->DeleteRun("team42/nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
  EXPECT_THAT(store_->ListTensors("team42/nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
  EXPECT_THAT(store_->OpenTensor("team42/nope", Addr("c", "k")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
  const std::vector<uint8_t> bytes = Bytes(3);
  EXPECT_THAT(
      store_->BeginTensor("team42/nope", HeaderFor(Addr("c", "k"), bytes)),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
}

// A 10 KB name with control bytes shows escaped and abbreviated (~200 bytes)
// in messages: not repeated whole, not splitting a log line.
TEST_P(StoreTest, LongHostileNamesAreAbbreviatedAndEscapedInMessages) {
  const std::string hostile = "k\n\x1b[31m" + std::string(10'000, 'a') + "\r\tend";
  const auto expect_short_and_escaped = [](const absl::Status& s, size_t bytes) {
    SCOPED_TRACE(s.ToString().substr(0, 300));
    EXPECT_FALSE(s.ok());
    const std::string msg(s.message());
    EXPECT_LT(msg.size(), 1024u);
    EXPECT_EQ(msg.find_first_of("\n\r\t\x1b"), std::string::npos);
    EXPECT_THAT(msg, HasSubstr("k\\n\\x1b[31maaa"));
    EXPECT_THAT(msg, HasSubstr("aaa\\r\\tend"));
    EXPECT_THAT(msg, HasSubstr(absl::StrCat("(", bytes, " bytes)")));
  };
  const size_t n = hostile.size();
  expect_short_and_escaped(store_->GetRun(hostile).status(), n);
  expect_short_and_escaped(store_->SealRun(hostile, RunState::kSealed).status(), n);
  // "c/" + the key.
  expect_short_and_escaped(store_->OpenTensor(kRun, Addr("c", hostile)).status(), n + 2);
  expect_short_and_escaped(store_->GetReport(hostile).status(), n);
  ASSERT_THAT(store_->CreateRun(MakeRun(hostile)), IsOk());
  expect_short_and_escaped(store_->CreateRun(MakeRun(hostile)), n);
}

TEST_P(StoreTest, ListRunsFiltersByPrefixAndSortsByName) {
  for (const char* name :
       {"team7/zeta", "team42/alpha", "team7/alpha", "team7x/beta"}) {
    ASSERT_THAT(store_->CreateRun(MakeRun(name)), IsOk());
  }
  ASSERT_OK_AND_ASSIGN(std::vector<RunInfo> runs, store_->ListRuns("team7/"));
  std::vector<std::string> names;
  for (const RunInfo& r : runs) names.push_back(r.name);
  EXPECT_THAT(names, ElementsAre("team7/alpha", "team7/zeta"));

  ASSERT_OK_AND_ASSIGN(runs, store_->ListRuns(""));
  names.clear();
  for (const RunInfo& r : runs) names.push_back(r.name);
  EXPECT_THAT(names, ElementsAre("team42/alpha", "team42/bert-paddle",
                                 "team7/alpha", "team7/zeta", "team7x/beta"));
  EXPECT_THAT(store_->ListRuns("nobody/"), IsOk());
  EXPECT_THAT(*store_->ListRuns("nobody/"), IsEmpty());
}

TEST_P(StoreTest, SealRunOnlyFromOpen) {
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->SealRun(kRun, RunState::kSealed));
  EXPECT_EQ(run.state, RunState::kSealed);
  ASSERT_OK_AND_ASSIGN(run, store_->GetRun(kRun));
  EXPECT_EQ(run.state, RunState::kSealed);
  EXPECT_THAT(
      store_->SealRun(kRun, RunState::kAborted),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed")));

  ASSERT_THAT(store_->CreateRun(MakeRun("team42/b")), IsOk());
  ASSERT_OK_AND_ASSIGN(run, store_->SealRun("team42/b", RunState::kAborted));
  EXPECT_EQ(run.state, RunState::kAborted);
  EXPECT_EQ(RunStateName(run.state), "aborted");
}

TEST_P(StoreTest, DeleteRunRemovesEverythingAndReturnsCount) {
  ASSERT_THAT(Write(kRun, Addr("c", "a"), Bytes(20)), IsOk());
  ASSERT_THAT(Write(kRun, Addr("c", "b"), Bytes(30)), IsOk());
  ASSERT_THAT(store_->CreateRun(MakeRun("team42/other")), IsOk());
  ASSERT_THAT(Write("team42/other", Addr("c", "a"), Bytes(10, 9)), IsOk());

  ASSERT_OK_AND_ASSIGN(uint64_t deleted, store_->DeleteRun(kRun));
  EXPECT_EQ(deleted, 2u);
  EXPECT_THAT(store_->GetRun(kRun),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(kRun)));
  EXPECT_THAT(store_->OpenTensor(kRun, Addr("c", "a")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(kRun)));

  // A re-created run starts empty; the other run is untouched.
  ASSERT_THAT(store_->CreateRun(MakeRun(kRun)), IsOk());
  EXPECT_THAT(Keys(kRun), IsEmpty());
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 0u);
  EXPECT_THAT(ReadAll("team42/other", Addr("c", "a")),
              IsOkAndHolds(Bytes(10, 9)));
}

// --- tensors
// ------------------------------------------------------------------

TEST_P(StoreTest, TensorVisibleOnlyAfterCommit) {
  const std::vector<uint8_t> bytes = Bytes(50);
  ASSERT_OK_AND_ASSIGN(
      auto writer, store_->BeginTensor(kRun, HeaderFor(Addr("c", "w"), bytes)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 20)),
              IsOk());
  EXPECT_THAT(Keys(kRun), IsEmpty());
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(20)), IsOk());
  EXPECT_THAT(Keys(kRun), IsEmpty());
  EXPECT_THAT(store_->OpenTensor(kRun, Addr("c", "w")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("c/w")));

  ASSERT_OK_AND_ASSIGN(CommitResult done, writer->Commit());
  EXPECT_EQ(done.kind, CommitKind::kStored);
  EXPECT_EQ(done.sequence, 0u);
  EXPECT_THAT(Keys(kRun), ElementsAre("c/w"));
  EXPECT_THAT(ReadAll(kRun, Addr("c", "w")), IsOkAndHolds(bytes));
  EXPECT_THAT(writer->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("already")));

  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 1u);
  EXPECT_EQ(run.total_bytes, 50u);
}

TEST_P(StoreTest, MetaRoundTripsDtypeShapeAndStep) {
  std::vector<uint8_t> bytes = Bytes(2 * 3 * 4);
  TensorHeader h;
  h.address = Addr("fwd", "encoder/layer.0/w", -3);
  h.dtype = DType::kFloat32;
  h.shape = {2, 3};
  h.byte_length = bytes.size();
  h.crc32c = Crc32c(bytes.data(), bytes.size());
  ASSERT_THAT(Write(kRun, h, bytes), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, h.address));
  const TensorMeta& meta = reader->meta();
  EXPECT_EQ(meta.header.address, h.address);
  EXPECT_EQ(meta.header.dtype, DType::kFloat32);
  EXPECT_EQ(meta.header.shape, h.shape);
  EXPECT_EQ(meta.header.byte_length, 24u);
  EXPECT_EQ(meta.header.crc32c, h.crc32c);
  EXPECT_EQ(meta.sequence, 0u);
  // Steps are part of the address: none, -3 and 5 are three tensors.
  EXPECT_THAT(store_->OpenTensor(kRun, Addr("fwd", "encoder/layer.0/w")),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  h.address.step = std::nullopt;
  ASSERT_THAT(Write(kRun, h, bytes), IsOk());
  h.address.step = 5;
  ASSERT_THAT(Write(kRun, h, bytes), IsOk());
  EXPECT_THAT(Keys(kRun),
              ElementsAre("fwd/encoder/layer.0/w@-3", "fwd/encoder/layer.0/w",
                          "fwd/encoder/layer.0/w@5"));
}

TEST_P(StoreTest, InconsistentHeaderIsInvalidArgument) {
  TensorHeader h = HeaderFor(Addr("c", "k"), Bytes(8));
  h.dtype = DType::kFloat32;  // 8 float32 = 32 bytes, not 8
  EXPECT_THAT(
      store_->BeginTensor(kRun, h),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte_length")));
  h.shape = {-1};
  EXPECT_THAT(store_->BeginTensor(kRun, h),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_P(StoreTest, AppendPastLengthIsInvalidArgument) {
  const std::vector<uint8_t> bytes = Bytes(10);
  ASSERT_OK_AND_ASSIGN(
      auto writer, store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), bytes)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 8)), IsOk());
  EXPECT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 3)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("c/k"), HasSubstr("offset 8"),
                                        HasSubstr("10"))));
  // The rejected append counted nothing: the tensor can still complete.
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(8)), IsOk());
  EXPECT_THAT(writer->Commit(), IsOk());
}

TEST_P(StoreTest, WrongCrcAtCommitIsInvalidArgumentAndInvisible) {
  const std::vector<uint8_t> bytes = Bytes(40);
  TensorHeader h = HeaderFor(Addr("c", "k"), bytes);
  h.crc32c ^= 1;
  EXPECT_THAT(
      Write(kRun, h, bytes),
      StatusIs(absl::StatusCode::kInvalidArgument,
               ::testing::AllOf(HasSubstr("crc32c"), HasSubstr("c/k"))));
  EXPECT_THAT(Keys(kRun), IsEmpty());
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 0u);
  // The address is still free.
  EXPECT_THAT(Write(kRun, Addr("c", "k"), bytes), IsOk());
}

TEST_P(StoreTest, ShortTensorAtCommitIsInvalidArgumentAndInvisible) {
  const std::vector<uint8_t> bytes = Bytes(40);
  ASSERT_OK_AND_ASSIGN(
      auto writer, store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), bytes)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 39)),
              IsOk());
  EXPECT_THAT(writer->Commit(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("39"), HasSubstr("40"))));
  writer.reset();
  EXPECT_THAT(Keys(kRun), IsEmpty());
}

TEST_P(StoreTest, IdenticalResendIsAlreadyPresent) {
  const std::vector<uint8_t> bytes = Bytes(33);
  ASSERT_THAT(Write(kRun, Addr("c", "first"), Bytes(4)), IsOk());
  ASSERT_OK_AND_ASSIGN(CommitResult first, Write(kRun, Addr("c", "k"), bytes));
  EXPECT_EQ(first.kind, CommitKind::kStored);
  EXPECT_EQ(first.sequence, 1u);
  ASSERT_OK_AND_ASSIGN(CommitResult again, Write(kRun, Addr("c", "k"), bytes));
  EXPECT_EQ(again.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(again.sequence, 1u);
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 2u);
  EXPECT_EQ(run.total_bytes, 37u);
  // The resent bytes are still verified.
  TensorHeader h = HeaderFor(Addr("c", "k"), bytes);
  std::vector<uint8_t> wrong = bytes;
  wrong[0] ^= 0xff;
  EXPECT_THAT(
      Write(kRun, h, wrong),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("crc32c")));
  EXPECT_THAT(ReadAll(kRun, Addr("c", "k")), IsOkAndHolds(bytes));
}

TEST_P(StoreTest, ConflictingHeaderIsAlreadyExistsNamingTheAddress) {
  ASSERT_THAT(Write(kRun, Addr("ckpt", "loss", 7), Bytes(8)), IsOk());
  EXPECT_THAT(
      store_->BeginTensor(kRun, HeaderFor(Addr("ckpt", "loss", 7), Bytes(9))),
      StatusIs(absl::StatusCode::kAlreadyExists,
               ::testing::AllOf(HasSubstr(kRun), HasSubstr("ckpt/loss@7"),
                                HasSubstr("shape (8,) vs (9,)"))));
  EXPECT_THAT(store_->BeginTensor(
                  kRun, HeaderFor(Addr("ckpt", "loss", 7), Bytes(8, 2))),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("crc32c")));
  EXPECT_THAT(ReadAll(kRun, Addr("ckpt", "loss", 7)), IsOkAndHolds(Bytes(8)));
}

TEST_P(StoreTest, OverwriteRunReplaces) {
  const std::string run = "team42/overwrite";
  ASSERT_THAT(store_->CreateRun(MakeRun(run, /*overwrite=*/true)), IsOk());
  ASSERT_THAT(Write(run, Addr("c", "k"), Bytes(30)), IsOk());
  ASSERT_THAT(Write(run, Addr("c", "other"), Bytes(5)), IsOk());
  const std::vector<uint8_t> fresh = Bytes(17, 77);
  ASSERT_OK_AND_ASSIGN(CommitResult done, Write(run, Addr("c", "k"), fresh));
  EXPECT_EQ(done.kind, CommitKind::kReplaced);
  EXPECT_EQ(done.sequence, 2u);
  EXPECT_EQ(done.replaced_bytes, 30u);  // the old tensor's size
  EXPECT_THAT(ReadAll(run, Addr("c", "k")), IsOkAndHolds(fresh));
  EXPECT_THAT(Keys(run), ElementsAre("c/other", "c/k"));
  ASSERT_OK_AND_ASSIGN(RunInfo info, store_->GetRun(run));
  EXPECT_EQ(info.tensor_count, 2u);
  EXPECT_EQ(info.total_bytes, 22u);
  // Identical resend into an overwrite run is still kAlreadyPresent.
  ASSERT_OK_AND_ASSIGN(done, Write(run, Addr("c", "k"), fresh));
  EXPECT_EQ(done.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(done.sequence, 2u);
  EXPECT_EQ(done.replaced_bytes, 0u);
}

TEST_P(StoreTest, ListTensorsInSequenceOrderWithCheckpointFilter) {
  ASSERT_THAT(Write(kRun, Addr("zz", "b"), Bytes(3)), IsOk());
  ASSERT_THAT(Write(kRun, Addr("aa", "z"), Bytes(3)), IsOk());
  ASSERT_THAT(Write(kRun, Addr("zz", "a"), Bytes(3)), IsOk());
  ASSERT_THAT(Write(kRun, Addr("a", "x"), Bytes(3)), IsOk());
  ASSERT_THAT(Write(kRun, Addr("aa", "a", 2), Bytes(3)), IsOk());
  EXPECT_THAT(Keys(kRun), ElementsAre("zz/b", "aa/z", "zz/a", "a/x", "aa/a@2"));
  EXPECT_THAT(Keys(kRun, "aa"), ElementsAre("aa/z", "aa/a@2"));
  EXPECT_THAT(Keys(kRun, "a"), ElementsAre("a/x"));
  EXPECT_THAT(Keys(kRun, "nope"), IsEmpty());
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> all, store_->ListTensors(kRun));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].sequence, i);
}

TEST_P(StoreTest, WriterDestroyedWithoutCommitLeavesNothing) {
  const std::vector<uint8_t> bytes = Bytes(100);
  {
    ASSERT_OK_AND_ASSIGN(
        auto writer,
        store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), bytes)));
    ASSERT_THAT(writer->Append(bytes), IsOk());
  }
  EXPECT_THAT(Keys(kRun), IsEmpty());
  EXPECT_THAT(store_->OpenTensor(kRun, Addr("c", "k")),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 0u);
  ASSERT_OK_AND_ASSIGN(CommitResult done, Write(kRun, Addr("c", "k"), bytes));
  EXPECT_EQ(done.kind, CommitKind::kStored);
  EXPECT_EQ(done.sequence, 0u);
}

TEST_P(StoreTest, SealedRunRejectsTensors) {
  const std::vector<uint8_t> bytes = Bytes(10);
  ASSERT_OK_AND_ASSIGN(
      auto writer,
      store_->BeginTensor(kRun, HeaderFor(Addr("c", "late"), bytes)));
  ASSERT_THAT(writer->Append(bytes), IsOk());
  ASSERT_THAT(store_->SealRun(kRun, RunState::kSealed), IsOk());
  EXPECT_THAT(store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), bytes)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(kRun), HasSubstr("sealed"))));
  // Sealed between BeginTensor and Commit.
  EXPECT_THAT(writer->Commit(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("sealed")));
  writer.reset();
  EXPECT_THAT(Keys(kRun), IsEmpty());
}

TEST_P(StoreTest, RunDeletedDuringWriteFailsCommit) {
  const std::vector<uint8_t> bytes = Bytes(10);
  ASSERT_OK_AND_ASSIGN(
      auto writer, store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), bytes)));
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 4)), IsOk());
  ASSERT_THAT(store_->DeleteRun(kRun), IsOk());
  ASSERT_THAT(store_->CreateRun(MakeRun(kRun)), IsOk());  // a new incarnation
  ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(4)), IsOk());
  EXPECT_THAT(writer->Commit(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("deleted")));
  writer.reset();
  EXPECT_THAT(Keys(kRun), IsEmpty());
}

TEST_P(StoreTest, ConcurrentWritersOfOneAddressAreRecheckedAtCommit) {
  const std::vector<uint8_t> a = Bytes(12, 1), b = Bytes(12, 2);
  ASSERT_OK_AND_ASSIGN(auto wa,
                       store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), a)));
  ASSERT_OK_AND_ASSIGN(auto wb,
                       store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), b)));
  ASSERT_OK_AND_ASSIGN(auto wa2,
                       store_->BeginTensor(kRun, HeaderFor(Addr("c", "k"), a)));
  ASSERT_THAT(wa->Append(a), IsOk());
  ASSERT_THAT(wb->Append(b), IsOk());
  ASSERT_THAT(wa2->Append(a), IsOk());
  ASSERT_OK_AND_ASSIGN(CommitResult first, wa->Commit());
  EXPECT_EQ(first.kind, CommitKind::kStored);
  EXPECT_THAT(wb->Commit(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("c/k")));
  ASSERT_OK_AND_ASSIGN(CommitResult same, wa2->Commit());
  EXPECT_EQ(same.kind, CommitKind::kAlreadyPresent);
  EXPECT_EQ(same.sequence, first.sequence);
  wb.reset();
  wa2.reset();
  EXPECT_THAT(ReadAll(kRun, Addr("c", "k")), IsOkAndHolds(a));
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 1u);
  EXPECT_EQ(run.total_bytes, 12u);
}

TEST_P(StoreTest, ReadAnyRangeAcrossChunkBoundaries) {
  const std::vector<uint8_t> bytes = Bytes(61);
  ASSERT_THAT(Write(kRun, HeaderFor(Addr("c", "k"), bytes), bytes, 13), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, Addr("c", "k")));
  for (size_t off = 0; off <= bytes.size(); ++off) {
    for (size_t n = 0; off + n <= bytes.size(); ++n) {
      std::vector<uint8_t> got(n, 0xEE);
      ASSERT_THAT(reader->Read(off, absl::MakeSpan(got)), IsOk())
          << off << "+" << n;
      ASSERT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + off))
          << off << "+" << n;
    }
  }
  std::vector<uint8_t> two(2);
  EXPECT_THAT(reader->Read(60, absl::MakeSpan(two)),
              StatusIs(absl::StatusCode::kOutOfRange,
                       ::testing::AllOf(HasSubstr("c/k"), HasSubstr("61"))));
  EXPECT_THAT(reader->Read(62, absl::Span<uint8_t>()),
              StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
  EXPECT_THAT(reader->Read(~uint64_t{0}, absl::MakeSpan(two)),
              StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
}

TEST_P(StoreTest, LargeTensorInUnevenAppends) {
  // 1 MiB + 3 float32 values: two 1 MiB chunks plus a tail in the default
  // RocksDB layout.
  const size_t n = (1 << 18) + 3;
  std::vector<uint8_t> bytes(n * 4);
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<uint8_t>(i * 7 + i / 251);
  TensorHeader h;
  h.address = Addr("c", "big");
  h.dtype = DType::kFloat32;
  h.shape = {static_cast<int64_t>(n)};
  h.byte_length = bytes.size();
  h.crc32c = Crc32c(bytes.data(), bytes.size());
  ASSERT_THAT(Write(kRun, h, bytes, 300001), IsOk());
  EXPECT_THAT(ReadAll(kRun, h.address), IsOkAndHolds(bytes));
}

TEST_P(StoreTest, EmptyAndScalarTensors) {
  TensorHeader empty;
  empty.address = Addr("c", "empty");
  empty.dtype = DType::kFloat32;
  empty.shape = {0, 5};
  empty.byte_length = 0;
  empty.crc32c = 0;
  ASSERT_OK_AND_ASSIGN(auto writer, store_->BeginTensor(kRun, empty));
  ASSERT_THAT(writer->Append({}), IsOk());
  ASSERT_OK_AND_ASSIGN(CommitResult done, writer->Commit());
  EXPECT_EQ(done.kind, CommitKind::kStored);
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, empty.address));
  EXPECT_EQ(reader->meta().header.shape, empty.shape);
  EXPECT_THAT(reader->Read(0, absl::Span<uint8_t>()), IsOk());
  uint8_t one;
  EXPECT_THAT(reader->Read(0, absl::MakeSpan(&one, 1)),
              StatusIs(absl::StatusCode::kOutOfRange, ::testing::_));
  // Resending the empty tensor is idempotent.
  ASSERT_OK_AND_ASSIGN(writer, store_->BeginTensor(kRun, empty));
  ASSERT_OK_AND_ASSIGN(done, writer->Commit());
  EXPECT_EQ(done.kind, CommitKind::kAlreadyPresent);

  // 0-d: one element.
  const std::vector<uint8_t> scalar = {1, 2, 3, 4, 5, 6, 7, 8};
  TensorHeader h;
  h.address = Addr("c", "loss");
  h.dtype = DType::kFloat64;
  h.shape = {};
  h.byte_length = 8;
  h.crc32c = Crc32c(scalar.data(), scalar.size());
  ASSERT_THAT(Write(kRun, h, scalar), IsOk());
  EXPECT_THAT(ReadAll(kRun, h.address), IsOkAndHolds(scalar));
  ASSERT_OK_AND_ASSIGN(reader, store_->OpenTensor(kRun, h.address));
  EXPECT_TRUE(reader->meta().header.shape.empty());
}

TEST_P(StoreTest, ReaderOpenedBeforeDeleteKeepsReading) {
  const std::vector<uint8_t> bytes = Bytes(40);
  ASSERT_THAT(Write(kRun, Addr("c", "k"), bytes), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, Addr("c", "k")));
  ASSERT_THAT(store_->DeleteRun(kRun), IsOk());
  std::vector<uint8_t> got(bytes.size());
  ASSERT_THAT(reader->Read(0, absl::MakeSpan(got)), IsOk());
  EXPECT_EQ(got, bytes);
}

TEST_P(StoreTest, ConcurrentWritersIntoOneRun) {
  constexpr int kThreads = 8, kPerThread = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::vector<uint8_t> bytes =
            Bytes(10 + static_cast<size_t>(i), static_cast<uint8_t>(t));
        const TensorAddress a =
            Addr(absl::StrCat("t", t), absl::StrCat("k", i));
        if (!Write(kRun, HeaderFor(a, bytes), bytes, 4).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> all, store_->ListTensors(kRun));
  ASSERT_THAT(all, SizeIs(kThreads * kPerThread));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].sequence, i);
  std::set<std::string> names;
  for (const TensorMeta& m : all)
    names.insert(AddressToString(m.header.address));
  EXPECT_EQ(names.size(), all.size());
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, static_cast<uint64_t>(kThreads * kPerThread));
  uint64_t want_bytes = 0;
  for (int i = 0; i < kPerThread; ++i) want_bytes += 10 + i;
  EXPECT_EQ(run.total_bytes, want_bytes * kThreads);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_THAT(ReadAll(kRun, Addr(absl::StrCat("t", t), "k24")),
                IsOkAndHolds(Bytes(34, static_cast<uint8_t>(t))));
  }
}

// --- reports
// ------------------------------------------------------------------

StoredReport Report(std::string id, std::string ref, std::string cand,
                    int64_t created_s) {
  StoredReport r;
  r.id = std::move(id);
  r.ref = std::move(ref);
  r.cand = std::move(cand);
  r.policy = "default";
  r.backend = "cpu";
  r.created = absl::FromUnixSeconds(created_s);
  return r;
}

// --- ranks and placements ---------------------------------------------------

TensorAddress RankAddr(std::string checkpoint, std::string key,
                       std::optional<int64_t> step, uint32_t rank) {
  return TensorAddress{std::move(checkpoint), std::move(key), step, rank};
}

// A float32 header of `shape` over `bytes` (4 bytes per element).
TensorHeader Float32Header(const TensorAddress& address, Shape shape,
                           const std::vector<uint8_t>& bytes, const Placement& placement) {
  TensorHeader h;
  h.address = address;
  h.dtype = DType::kFloat32;
  h.shape = std::move(shape);
  h.byte_length = bytes.size();
  h.crc32c = Crc32c(bytes.data(), bytes.size());
  h.placement = placement;
  return h;
}

// (checkpoint, key, step) at ranks 0 and 1 are two tensors, each with its
// own bytes; the list stays in arrival order whatever the rank.
TEST_P(StoreTest, RanksOfOneAddressAreDistinctTensors) {
  const std::vector<uint8_t> rank1 = Bytes(12, 9), rank0 = Bytes(20, 3);
  ASSERT_OK_AND_ASSIGN(CommitResult r1, Write(kRun, RankAddr("fwd", "logits", 3, 1), rank1));
  EXPECT_EQ(r1.kind, CommitKind::kStored);
  ASSERT_OK_AND_ASSIGN(CommitResult r0, Write(kRun, RankAddr("fwd", "logits", 3, 0), rank0));
  EXPECT_EQ(r0.kind, CommitKind::kStored);  // not a conflict with rank 1
  ASSERT_THAT(Write(kRun, RankAddr("fwd", "logits", std::nullopt, 7), Bytes(2)), IsOk());
  ASSERT_THAT(Write(kRun, RankAddr("fwd", "logits", 2, 1), Bytes(2)), IsOk());
  EXPECT_THAT(Keys(kRun), ElementsAre("fwd/logits@3#rank 1", "fwd/logits@3",
                                      "fwd/logits#rank 7", "fwd/logits@2#rank 1"));
  EXPECT_THAT(Keys(kRun, "fwd"), SizeIs(4));
  EXPECT_THAT(ReadAll(kRun, RankAddr("fwd", "logits", 3, 1)), IsOkAndHolds(rank1));
  EXPECT_THAT(ReadAll(kRun, Addr("fwd", "logits", 3)), IsOkAndHolds(rank0));
  EXPECT_THAT(store_->OpenTensor(kRun, RankAddr("fwd", "logits", 3, 2)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("fwd/logits@3#rank 2")));
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> all, store_->ListTensors(kRun));
  ASSERT_THAT(all, SizeIs(4));
  EXPECT_EQ(all[0].header.address, RankAddr("fwd", "logits", 3, 1));
  EXPECT_EQ(all[2].header.address.rank, 7u);
  EXPECT_EQ(all[2].header.address.step, std::nullopt);
  ASSERT_OK_AND_ASSIGN(RunInfo run, store_->GetRun(kRun));
  EXPECT_EQ(run.tensor_count, 4u);
  EXPECT_EQ(run.total_bytes, 36u);
  // A conflict at rank 1 names the rank; rank 0 is untouched.
  EXPECT_THAT(store_->BeginTensor(kRun, HeaderFor(RankAddr("fwd", "logits", 3, 1), Bytes(5))),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("fwd/logits@3#rank 1")));
}

// Placements come back from the list and the reader as they were given, and
// (RocksDB) after the store is reopened.
TEST_P(StoreTest, PlacementRoundTripsThroughCommitListAndReopen) {
  const std::vector<uint8_t> piece = Bytes(4 * 3 * 4, 5), whole = Bytes(8 * 3 * 4, 6);
  // Rows 4..7 of an 8 x 3 tensor, on rank 1; the same tensor replicated on
  // rank 0; a partial sum; a tensor that declares nothing.
  const TensorHeader shard = Float32Header(RankAddr("fwd", "w", 3, 1), {4, 3}, piece,
                                           Placement::Shard(0, {8, 3}, {4, 0}));
  const TensorHeader replicate = Float32Header(RankAddr("fwd", "w", 3, 0), {8, 3}, whole,
                                               Placement::Replicate());
  const TensorHeader partial = Float32Header(RankAddr("bp", "g", std::nullopt, 2), {8, 3},
                                             whole, Placement::Partial());
  const TensorHeader plain = Float32Header(Addr("bp", "h"), {4, 3}, piece, Placement{});
  const std::vector<std::pair<TensorHeader, std::vector<uint8_t>>> written = {
      {shard, piece}, {replicate, whole}, {partial, whole}, {plain, piece}};
  for (const auto& [h, bytes] : written) ASSERT_THAT(Write(kRun, h, bytes), IsOk());

  auto check = [&](const std::string& when) {
    ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> all, store_->ListTensors(kRun));
    ASSERT_THAT(all, SizeIs(4)) << when;
    for (size_t i = 0; i < written.size(); ++i) {
      const TensorHeader& want = written[i].first;
      EXPECT_EQ(all[i].header.address, want.address) << when;
      EXPECT_EQ(all[i].header.placement, want.placement)
          << when << ": " << AddressToString(want.address) << " came back as "
          << PlacementToString(all[i].header.placement);
      EXPECT_EQ(all[i].header.shape, want.shape) << when;
      ASSERT_OK_AND_ASSIGN(auto reader, store_->OpenTensor(kRun, want.address));
      EXPECT_EQ(reader->meta().header.placement, want.placement) << when;
      EXPECT_THAT(ReadAll(kRun, want.address), IsOkAndHolds(written[i].second)) << when;
    }
    EXPECT_EQ(all[0].header.placement.global_shape, (Shape{8, 3}));
    EXPECT_EQ(all[0].header.placement.offset, (Shape{4, 0}));
  };
  check("after commit");
  if (GetParam().name != "Memory") {
    store_.reset();
    ASSERT_OK_AND_ASSIGN(store_, GetParam().open(dir_));
    check("after reopen");
  }
  // An identical resend is already present; the same bytes under another
  // placement are a different tensor (AlreadyExists naming both).
  ASSERT_OK_AND_ASSIGN(CommitResult again, Write(kRun, shard, piece));
  EXPECT_EQ(again.kind, CommitKind::kAlreadyPresent);
  TensorHeader moved = shard;
  moved.placement.offset = {0, 0};
  EXPECT_THAT(store_->BeginTensor(kRun, moved),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       ::testing::AllOf(HasSubstr("fwd/w@3#rank 1"),
                                        HasSubstr("placement shard(0) of (8, 3) at (4, 0) vs "
                                                  "shard(0) of (8, 3) at (0, 0)"))));
  TensorHeader undeclared = replicate;
  undeclared.placement.kind = PlacementKind::kNone;  // replicate has no dims
  EXPECT_THAT(store_->BeginTensor(kRun, undeclared),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("placement replicate vs none")));
}

TEST_P(StoreTest, InvalidRankOrPlacementIsInvalidArgument) {
  const std::vector<uint8_t> piece = Bytes(4 * 3 * 4);
  TensorHeader h = Float32Header(RankAddr("fwd", "w", 3, kMaxRank + 1), {4, 3}, piece,
                                 Placement{});
  EXPECT_THAT(store_->BeginTensor(kRun, h),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid rank 1048576")));
  h.address.rank = kMaxRank;
  EXPECT_THAT(Write(kRun, h, piece), IsOk());
  // Rows 6..9 of 8 do not exist.
  h.address.rank = 1;
  h.placement = Placement::Shard(0, {8, 3}, {6, 0});
  EXPECT_THAT(store_->BeginTensor(kRun, h),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("fwd/w@3#rank 1"),
                                        HasSubstr("exceeds the global size 8"))));
  h.placement = Placement::Replicate();
  h.placement.dim = 1;
  EXPECT_THAT(store_->BeginTensor(kRun, h),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid placement")));
  EXPECT_THAT(Keys(kRun), ElementsAre(absl::StrCat("fwd/w@3#rank ", kMaxRank)));
}

TEST_P(StoreTest, ReportRoundTrips) {
  StoredReport r = Report("rpt-0000000000000001", "team42/torch", kRun, 100);
  r.passed = false;
  r.created = absl::FromUnixMicros(1700000000654321);
  r.tensors = 10;
  r.passed_tensors = 6;
  r.warned = 1;
  r.failed = 2;
  r.missing_in_ref = 1;
  r.missing_in_cand = 3;
  r.first_failure = Addr("bp", "grad/w", 12);
  r.policy_hash = std::string(64, 'c');
  r.renderings = {{"json", "{\"passed\": false}"},
                  {"text", "FAIL\n"},
                  {"markdown", std::string("a\0b", 3)}};
  ASSERT_THAT(store_->PutReport(r), IsOk());
  ASSERT_OK_AND_ASSIGN(StoredReport got, store_->GetReport(r.id));
  EXPECT_EQ(got.id, r.id);
  EXPECT_EQ(got.ref, r.ref);
  EXPECT_EQ(got.cand, r.cand);
  EXPECT_EQ(got.policy, "default");
  EXPECT_EQ(got.policy_hash, r.policy_hash);
  EXPECT_EQ(got.backend, "cpu");
  EXPECT_FALSE(got.passed);
  EXPECT_EQ(got.created, r.created);
  EXPECT_EQ(got.tensors, 10u);
  EXPECT_EQ(got.passed_tensors, 6u);
  EXPECT_EQ(got.warned, 1u);
  EXPECT_EQ(got.failed, 2u);
  EXPECT_EQ(got.missing_in_ref, 1u);
  EXPECT_EQ(got.missing_in_cand, 3u);
  EXPECT_EQ(got.first_failure, r.first_failure);
  EXPECT_EQ(got.renderings, r.renderings);

  EXPECT_THAT(store_->PutReport(r),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr(r.id)));
  EXPECT_THAT(
      store_->GetReport("rpt-ffffffffffffffff"),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("rpt-ffffffffffffffff")));
}

TEST_P(StoreTest, ListReportsNewestFirstWithFilterAndLimit) {
  StoredReport a = Report("rpt-000000000000000a", "r/ref", "r/one", 100);
  StoredReport b = Report("rpt-000000000000000b", "r/ref", "r/two", 300);
  StoredReport c = Report("rpt-000000000000000c", "r/other", "r/one", 200);
  StoredReport d = Report("rpt-000000000000000d", "r/x", "r/y", 50);
  a.renderings = {{"json", "{}"}};
  a.first_failure = Addr("c", "k");
  for (const StoredReport& r : {a, b, c, d}) {
    ASSERT_THAT(store_->PutReport(r), IsOk());
  }
  auto ids = [](const std::vector<StoredReport>& list) {
    std::vector<std::string> out;
    for (const StoredReport& r : list) out.push_back(r.id);
    return out;
  };
  ASSERT_OK_AND_ASSIGN(std::vector<StoredReport> list,
                       store_->ListReports("", 100));
  EXPECT_THAT(ids(list), ElementsAre(b.id, c.id, a.id, d.id));
  for (const StoredReport& r : list) EXPECT_THAT(r.renderings, IsEmpty());
  EXPECT_EQ(list[2].first_failure, a.first_failure);

  ASSERT_OK_AND_ASSIGN(list, store_->ListReports("r/one", 100));
  EXPECT_THAT(ids(list), ElementsAre(c.id, a.id));
  ASSERT_OK_AND_ASSIGN(list, store_->ListReports("r/ref", 1));
  EXPECT_THAT(ids(list), ElementsAre(b.id));
  ASSERT_OK_AND_ASSIGN(list, store_->ListReports("", 0));
  EXPECT_THAT(list, IsEmpty());
  ASSERT_OK_AND_ASSIGN(list, store_->ListReports("r/nobody", 10));
  EXPECT_THAT(list, IsEmpty());
}

// --- reference flag ---------------------------------------------------------

TEST_P(StoreTest, ReferenceFlagIsStoredByCreateAndChangedBySet) {
  ASSERT_OK_AND_ASSIGN(RunInfo plain, store_->GetRun(kRun));
  EXPECT_FALSE(plain.reference);
  RunInfo ref = MakeRun("upstream/bert-torch");
  ref.reference = true;
  ASSERT_THAT(store_->CreateRun(ref), IsOk());
  ASSERT_OK_AND_ASSIGN(RunInfo got, store_->GetRun("upstream/bert-torch"));
  EXPECT_TRUE(got.reference);
  EXPECT_EQ(got.labels, ref.labels);  // the flag does not disturb the rest

  ASSERT_OK_AND_ASSIGN(RunInfo set, store_->SetRunReference(kRun, true));
  EXPECT_TRUE(set.reference);
  EXPECT_EQ(set.owner, "alice");
  // Any state: a sealed run can become (or stop being) a reference.
  ASSERT_THAT(store_->SealRun(kRun, RunState::kSealed), IsOk());
  ASSERT_OK_AND_ASSIGN(got, store_->GetRun(kRun));
  EXPECT_TRUE(got.reference);
  EXPECT_EQ(got.state, RunState::kSealed);
  ASSERT_OK_AND_ASSIGN(set, store_->SetRunReference(kRun, false));
  EXPECT_FALSE(set.reference);
  EXPECT_EQ(set.state, RunState::kSealed);
  ASSERT_OK_AND_ASSIGN(std::vector<RunInfo> runs, store_->ListRuns(""));
  ASSERT_THAT(runs, SizeIs(2));
  EXPECT_FALSE(runs[0].reference);  // team42/bert-paddle
  EXPECT_TRUE(runs[1].reference);   // upstream/bert-torch
  EXPECT_THAT(store_->SetRunReference("team42/nope", true),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("team42/nope")));
}

// --- auth records -----------------------------------------------------------

TEST_P(StoreTest, AuthRecordsPutGetListAndReplace) {
  EXPECT_THAT(store_->GetAuthRecord("tok/aa"),
              StatusIs(absl::StatusCode::kNotFound,
                       ::testing::AllOf(HasSubstr("6-byte key"),
                                        ::testing::Not(HasSubstr("tok/aa")))));
  ASSERT_THAT(store_->PutAuthRecord("tok/bb", "second"), IsOk());
  ASSERT_THAT(store_->PutAuthRecord("tok/aa", std::string("fi\0rst", 6)),
              IsOk());
  ASSERT_THAT(store_->PutAuthRecord("other", "x"), IsOk());
  EXPECT_THAT(store_->GetAuthRecord("tok/aa"),
              IsOkAndHolds(std::string("fi\0rst", 6)));
  ASSERT_THAT(store_->PutAuthRecord("tok/aa", ""), IsOk());  // replaces
  EXPECT_THAT(store_->GetAuthRecord("tok/aa"), IsOkAndHolds(""));

  using Pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_THAT(store_->ListAuthRecords("tok/"),
              IsOkAndHolds(Pairs{{"tok/aa", ""}, {"tok/bb", "second"}}));
  EXPECT_THAT(store_->ListAuthRecords(""),
              IsOkAndHolds(Pairs{
                  {"other", "x"}, {"tok/aa", ""}, {"tok/bb", "second"}}));
  EXPECT_THAT(store_->ListAuthRecords("zzz"), IsOkAndHolds(Pairs{}));
  // Auth records are not runs and runs are not auth records.
  ASSERT_OK_AND_ASSIGN(std::vector<RunInfo> runs, store_->ListRuns(""));
  EXPECT_THAT(runs, SizeIs(1));
  EXPECT_THAT(store_->GetAuthRecord(kRun),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not found")));
}

TEST_P(StoreTest, AuthRecordKeyMustBeNonEmptyWithoutNul) {
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_THAT(store_->PutAuthRecord("", "v"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
  EXPECT_THAT(store_->PutAuthRecord(std::string("a\0b", 3), "v"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
  EXPECT_THAT(store_->GetAuthRecord(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
  EXPECT_THAT(store_->ListAuthRecords(""), IsOkAndHolds(Pairs{}));
}

TEST_P(StoreTest, InsertAuthRecordTakesAFreeKeyExactlyOnce) {
  ASSERT_THAT(store_->InsertAuthRecord("audit/0", "first"), IsOk());
  EXPECT_THAT(store_->InsertAuthRecord("audit/0", "second"),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("exists")));
  EXPECT_THAT(store_->GetAuthRecord("audit/0"), IsOkAndHolds(std::string("first")));
  EXPECT_THAT(store_->InsertAuthRecord("", "v"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  // Eight threads race for the same ten keys: each key is won once.
  std::atomic<int> won{0}, lost{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 10; ++k) {
        absl::Status s = store_->InsertAuthRecord(absl::StrCat("race/", k),
                                                  absl::StrCat("thread ", t));
        if (s.ok()) {
          ++won;
        } else if (absl::IsAlreadyExists(s)) {
          ++lost;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(won.load(), 10);
  EXPECT_EQ(lost.load(), 70);
  ASSERT_OK_AND_ASSIGN(auto raced, store_->ListAuthRecords("race/"));
  EXPECT_THAT(raced, SizeIs(10));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::ValuesIn(Backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace reprod::storage
