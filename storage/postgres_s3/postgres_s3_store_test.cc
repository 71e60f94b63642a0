// What the postgres+s3 store does beyond the conformance suite: multipart
// uploads, crash leftovers reclaimed by the sweep, lifecycle-safe deletes,
// checksums on read, schema versions and two replicas on one database.
// Runs against the real PostgreSQL and Ceph radosgw that
// tests/python/test_store_postgres_s3.py starts (REPROD_TEST_PG_URL,
// REPROD_TEST_S3_*); skipped, saying so, without them.
#include "storage/postgres_s3/postgres_s3_store.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/postgres_s3/internal/context.h"
#include "storage/postgres_s3/internal/pg.h"
#include "storage/s3/s3_client.h"
#include "storage/store.h"
#include "storage/testing/store_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reprod::storage {
namespace {

using ::reprod::storage::internal::PgConnection;
using ::reprod::storage::internal::PgParams;
using ::reprod::storage::internal::PgResult;
using ::reprod::testing::IsOk;
using ::reprod::testing::IsOkAndHolds;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

constexpr char kRun[] = "team42/bert-paddle";
constexpr uint64_t kMiB = uint64_t{1} << 20;

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<uint8_t>(seed + i * 7 + i / 251);
  }
  return out;
}

TensorHeader FloatHeader(const std::string& key, const std::vector<uint8_t>& bytes) {
  TensorHeader h;
  h.address = TensorAddress{"ckpt", key, std::nullopt};
  h.dtype = DType::kFloat32;
  h.shape = {static_cast<int64_t>(bytes.size() / 4)};
  h.byte_length = bytes.size();
  h.crc32c = Crc32c(bytes.data(), bytes.size());
  return h;
}

class PostgresS3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Env("REPROD_TEST_PG_URL").empty() || Env("REPROD_TEST_S3_ENDPOINT").empty()) {
      GTEST_SKIP() << "REPROD_TEST_PG_URL / REPROD_TEST_S3_ENDPOINT not set: "
                      "tests/python/test_store_postgres_s3.py runs these tests "
                      "against a real PostgreSQL and Ceph radosgw";
    }
    static std::atomic<int> counter{0};
    name_ = absl::StrCat("pgs3_", getpid(), "_", counter++);
    options_.pg_url = Env("REPROD_TEST_PG_URL");
    options_.pg_schema = name_;
    options_.s3.endpoint = Env("REPROD_TEST_S3_ENDPOINT");
    options_.s3.access_key = Env("REPROD_TEST_S3_ACCESS_KEY");
    options_.s3.secret_key = Env("REPROD_TEST_S3_SECRET_KEY");
    if (!Env("REPROD_TEST_S3_REGION").empty()) {
      options_.s3.region = Env("REPROD_TEST_S3_REGION");
    }
    options_.s3.bucket = "reprod-store-test";
    options_.s3_prefix = name_ + "/";
    options_.part_size = 5 * kMiB;
    options_.pg_connections = 4;
    options_.sweep_interval = absl::ZeroDuration();  // sweeps when told
    ASSERT_OK_AND_ASSIGN(s3_, S3Client::Create(options_.s3));
    ASSERT_OK_AND_ASSIGN(pg_, PgConnection::Connect(options_.pg_url, name_));
  }

  absl::StatusOr<std::unique_ptr<Store>> Open() {
    return OpenPostgresS3Store(options_);
  }

  std::vector<S3Object> Objects() {
    absl::StatusOr<std::vector<S3Object>> objects = s3_->ListObjects(options_.s3_prefix);
    EXPECT_THAT(objects, IsOk());
    return objects.ok() ? *objects : std::vector<S3Object>{};
  }

  std::vector<S3Upload> Uploads() {
    absl::StatusOr<std::vector<S3Upload>> uploads =
        s3_->ListMultipartUploads(options_.s3_prefix);
    EXPECT_THAT(uploads, IsOk());
    return uploads.ok() ? *uploads : std::vector<S3Upload>{};
  }

  int64_t Count(const std::string& table) {
    absl::StatusOr<PgResult> r = pg_->Exec(absl::StrCat("SELECT count(*) FROM ", table));
    EXPECT_THAT(r, IsOk());
    return r.ok() ? r->Int(0, 0) : -1;
  }

  std::string name_;
  PostgresS3StoreOptions options_;
  std::unique_ptr<S3Client> s3_;
  std::unique_ptr<PgConnection> pg_;
};

RunInfo NewRun(const std::string& name, bool overwrite = false) {
  RunInfo run;
  run.name = name;
  run.framework = "paddle";
  run.overwrite = overwrite;
  return run;
}

TEST_F(PostgresS3StoreTest, MultipartTensorRoundTripsWithRangedReads) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  ASSERT_THAT(store->CreateRun(NewRun(kRun)), IsOk());
  // 11 MiB + 12 bytes: two full 5 MiB parts and a short last one, written
  // in appends that straddle part and block boundaries.
  const std::vector<uint8_t> bytes = Pattern(11 * kMiB + 12, 3);
  const TensorHeader h = FloatHeader("big", bytes);
  ASSERT_THAT(testing::WriteInPieces(*store, kRun, h, bytes, kMiB + 7), IsOk());
  EXPECT_THAT(testing::ReadAll(*store, kRun, h.address), IsOkAndHolds(bytes));

  ASSERT_OK_AND_ASSIGN(auto reader, store->OpenTensor(kRun, h.address));
  for (uint64_t offset : {uint64_t{0}, uint64_t{1}, kMiB - 3, 5 * kMiB - 1,
                          10 * kMiB + 5, 11 * kMiB + 11}) {
    for (uint64_t size : {uint64_t{1}, uint64_t{3}, kMiB + 9}) {
      if (offset + size > bytes.size()) continue;
      std::vector<uint8_t> got(size);
      ASSERT_THAT(reader->Read(offset, absl::MakeSpan(got)), IsOk());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), bytes.begin() + offset))
          << "offset " << offset << " size " << size;
    }
  }
  // One object of the tensor's size, no unfinished upload, no record of one.
  const std::vector<S3Object> objects = Objects();
  ASSERT_THAT(objects, SizeIs(1));
  EXPECT_EQ(objects[0].size, bytes.size());
  EXPECT_THAT(Uploads(), IsEmpty());
  EXPECT_EQ(Count("uploads"), 0);
}

TEST_F(PostgresS3StoreTest, WriterDroppedMidMultipartLeavesNothing) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  ASSERT_THAT(store->CreateRun(NewRun(kRun)), IsOk());
  const std::vector<uint8_t> bytes = Pattern(12 * kMiB, 5);
  const TensorHeader h = FloatHeader("dropped", bytes);
  {
    ASSERT_OK_AND_ASSIGN(auto writer, store->BeginTensor(kRun, h));
    ASSERT_THAT(writer->Append(absl::MakeConstSpan(bytes).subspan(0, 6 * kMiB)),
                IsOk());
    EXPECT_THAT(Uploads(), SizeIs(1));  // the first part went up
    EXPECT_EQ(Count("uploads"), 1);
  }
  EXPECT_THAT(Uploads(), IsEmpty());
  EXPECT_THAT(Objects(), IsEmpty());
  EXPECT_EQ(Count("uploads"), 0);
  EXPECT_EQ(Count("garbage"), 0);
  ASSERT_OK_AND_ASSIGN(std::vector<TensorMeta> listed, store->ListTensors(kRun));
  EXPECT_THAT(listed, IsEmpty());
}

TEST_F(PostgresS3StoreTest, SweepReclaimsUploadsOfDeadReplicasOnly) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  // What a replica SIGKILLed mid-upload leaves: an uploads row under its id
  // (whose advisory lock died with its session), a started multipart
  // upload with one part, and one whose id it never wrote down; plus a
  // live replica's upload (its lock held by `alive`), which must stay.
  const std::string dead_single = options_.s3_prefix + "tensors/1/dead-single";
  const std::string dead_multi = options_.s3_prefix + "tensors/1/dead-multi";
  const std::string dead_unrecorded = options_.s3_prefix + "tensors/1/dead-unrecorded";
  const std::string live = options_.s3_prefix + "tensors/1/live";
  ASSERT_THAT(s3_->PutObject(dead_single, Pattern(100, 1)), IsOk());
  ASSERT_OK_AND_ASSIGN(std::string multi_id, s3_->CreateMultipartUpload(dead_multi));
  ASSERT_THAT(s3_->UploadPart(dead_multi, multi_id, 1, Pattern(5 * kMiB, 2)).status(),
              IsOk());
  ASSERT_OK_AND_ASSIGN(std::string unrecorded_id,
                       s3_->CreateMultipartUpload(dead_unrecorded));
  ASSERT_THAT(s3_->PutObject(live, Pattern(10, 3)), IsOk());
  ASSERT_OK_AND_ASSIGN(auto alive, PgConnection::Connect(options_.pg_url, name_));
  ASSERT_THAT(alive->Exec("SELECT pg_advisory_lock($1::int, 424242)",
                          PgParams().Int(internal::kReplicaLockClass))
                  .status(),
              IsOk());
  const auto add = [&](const std::string& key, int64_t replica, const std::string& id) {
    PgParams p;
    p.Text(key).Int(replica);
    if (id.empty()) {
      p.Null();
    } else {
      p.Text(id);
    }
    ASSERT_THAT(pg_->Exec("INSERT INTO uploads (object_key, replica, upload_id, "
                          "started_us) VALUES ($1, $2, $3, 0)",
                          p)
                    .status(),
                IsOk());
  };
  add(dead_single, 171717, "");
  add(dead_multi, 171717, multi_id);
  add(dead_unrecorded, 171717, "");
  add(live, 424242, "");

  ASSERT_THAT(store->Compact(), IsOk());
  const std::vector<S3Object> objects = Objects();
  ASSERT_THAT(objects, SizeIs(1));
  EXPECT_EQ(objects[0].key, live);
  EXPECT_THAT(Uploads(), IsEmpty());
  ASSERT_OK_AND_ASSIGN(PgResult left, pg_->Exec("SELECT object_key FROM uploads"));
  ASSERT_EQ(left.rows(), 1);
  EXPECT_EQ(left.Text(0, 0), live);

  // Once the live replica dies too, a new replica's open reclaims it.
  alive.reset();
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, Open());
  EXPECT_THAT(Objects(), IsEmpty());
  EXPECT_EQ(Count("uploads"), 0);
}

TEST_F(PostgresS3StoreTest, DeletedObjectsStayReadableUntilTheGraceEnds) {
  options_.delete_grace = absl::Hours(1);
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  ASSERT_THAT(store->CreateRun(NewRun(kRun, /*overwrite=*/true)), IsOk());
  const std::vector<uint8_t> a = Pattern(4000, 1), b = Pattern(4000, 2);
  ASSERT_THAT(testing::WriteInPieces(*store, kRun, FloatHeader("k", a), a, 999), IsOk());
  ASSERT_OK_AND_ASSIGN(auto old_reader,
                       store->OpenTensor(kRun, FloatHeader("k", a).address));
  ASSERT_OK_AND_ASSIGN(CommitResult replaced,
                       testing::WriteInPieces(*store, kRun, FloatHeader("k", b), b, 999));
  EXPECT_EQ(replaced.kind, CommitKind::kReplaced);
  EXPECT_THAT(Objects(), SizeIs(2));
  ASSERT_OK_AND_ASSIGN(CompactInfo info, store->Compact());
  EXPECT_EQ(info.bytes_before, 8000u);  // the new tensor + the old, in grace
  EXPECT_EQ(info.bytes_after, 8000u);
  std::vector<uint8_t> got(a.size());
  ASSERT_THAT(old_reader->Read(0, absl::MakeSpan(got)), IsOk());
  EXPECT_EQ(got, a);
  ASSERT_THAT(store->DeleteRun(kRun), IsOkAndHolds(1u));
  EXPECT_THAT(Objects(), SizeIs(2));
  EXPECT_EQ(Count("garbage"), 2);

  // Grace over (pretend an hour passed): the sweep deletes both objects.
  ASSERT_THAT(pg_->Exec("UPDATE garbage SET delete_after_us = 0").status(), IsOk());
  ASSERT_OK_AND_ASSIGN(info, store->Compact());
  EXPECT_EQ(info.bytes_before, 8000u);
  EXPECT_EQ(info.bytes_after, 0u);
  EXPECT_THAT(Objects(), IsEmpty());
  EXPECT_EQ(Count("garbage"), 0);
}

TEST_F(PostgresS3StoreTest, DamagedObjectIsDataLossNamingTheBlock) {
  options_.block_size = 1024;
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  ASSERT_THAT(store->CreateRun(NewRun(kRun)), IsOk());
  std::vector<uint8_t> bytes = Pattern(4096, 9);
  const TensorHeader h = FloatHeader("k", bytes);
  ASSERT_THAT(testing::WriteInPieces(*store, kRun, h, bytes, 4096), IsOk());
  const std::vector<S3Object> objects = Objects();
  ASSERT_THAT(objects, SizeIs(1));
  bytes[2500] ^= 0x10;  // block 2
  ASSERT_THAT(s3_->PutObject(objects[0].key, bytes), IsOk());
  ASSERT_OK_AND_ASSIGN(auto reader, store->OpenTensor(kRun, h.address));
  std::vector<uint8_t> got(100);
  EXPECT_THAT(reader->Read(0, absl::MakeSpan(got)), IsOk());  // block 0 is fine
  EXPECT_THAT(reader->Read(2400, absl::MakeSpan(got)),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("block 2"), HasSubstr("ckpt/k"),
                             HasSubstr("crc32c"))));
}

TEST_F(PostgresS3StoreTest, NewerSchemaIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  store.reset();
  ASSERT_THAT(pg_->Exec("INSERT INTO schema_migrations (version, description) "
                        "VALUES (999, 'from the future')")
                  .status(),
              IsOk());
  EXPECT_THAT(Open().status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        AllOf(HasSubstr("version 999"),
                                              HasSubstr("newer"))));
}

TEST_F(PostgresS3StoreTest, TwoReplicasShareRunsTensorsAndState) {
  ASSERT_OK_AND_ASSIGN(auto a, Open());
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  ASSERT_THAT(a->CreateRun(NewRun(kRun)), IsOk());
  const std::vector<uint8_t> x = Pattern(400, 4), y = Pattern(400, 5);
  ASSERT_THAT(testing::WriteInPieces(*a, kRun, FloatHeader("x", x), x, 64), IsOk());
  EXPECT_THAT(testing::ReadAll(*b, kRun, FloatHeader("x", x).address), IsOkAndHolds(x));
  // A writer on A whose run B seals meanwhile fails at commit.
  ASSERT_OK_AND_ASSIGN(auto writer, a->BeginTensor(kRun, FloatHeader("y", y)));
  ASSERT_THAT(writer->Append(y), IsOk());
  ASSERT_THAT(b->SealRun(kRun, RunState::kSealed), IsOk());
  EXPECT_THAT(writer->Commit().status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed")));
  writer.reset();
  ASSERT_OK_AND_ASSIGN(RunInfo run, a->GetRun(kRun));
  EXPECT_EQ(run.state, RunState::kSealed);
  EXPECT_EQ(run.tensor_count, 1u);
  EXPECT_THAT(Objects(), SizeIs(1));  // y's object was given up
}

TEST_F(PostgresS3StoreTest, WorkQueueHandsEachBatchToOneReplica) {
  ASSERT_OK_AND_ASSIGN(auto a, Open());
  ASSERT_OK_AND_ASSIGN(auto b, Open());
  WorkQueue* qa = a->work_queue();
  WorkQueue* qb = b->work_queue();
  ASSERT_NE(qa, nullptr);
  ASSERT_NE(qb, nullptr);
  ASSERT_OK_AND_ASSIGN(int live, qa->LiveWorkers());
  EXPECT_GE(live, 2);
  ASSERT_OK_AND_ASSIGN(uint64_t job, qa->Submit({{"small", 10}, {"big", 1000}, {"mid", 100}}));
  // A GPU replica takes the largest first, a CPU replica the smallest.
  ASSERT_OK_AND_ASSIGN(std::optional<ClaimedWork> big, qb->Claim(/*largest_first=*/true));
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->spec, "big");
  EXPECT_EQ(big->batch, 1u);
  ASSERT_OK_AND_ASSIGN(std::optional<ClaimedWork> small, qa->Claim(/*largest_first=*/false));
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->spec, "small");
  ASSERT_THAT(qb->Finish(job, big->batch, std::string("R1")), IsOk());
  ASSERT_THAT(qa->Finish(job, small->batch, absl::InternalError("boom")), IsOk());
  ASSERT_OK_AND_ASSIGN(std::vector<WorkResult> results, qa->Results(job));
  ASSERT_THAT(results, SizeIs(3));
  EXPECT_EQ(results[0].state, WorkResult::State::kFailed);
  EXPECT_THAT(results[0].error, HasSubstr("boom"));
  EXPECT_EQ(results[1].state, WorkResult::State::kDone);
  EXPECT_EQ(results[1].result, "R1");
  EXPECT_EQ(results[2].state, WorkResult::State::kPending);

  // A batch claimed by a replica that died goes back to pending.
  ASSERT_THAT(pg_->Exec("UPDATE work_batches SET state = 1, claimed_by = 171717 "
                        "WHERE batch = 2")
                  .status(),
              IsOk());
  ASSERT_OK_AND_ASSIGN(results, qb->Results(job));
  EXPECT_EQ(results[2].state, WorkResult::State::kPending);
  ASSERT_OK_AND_ASSIGN(std::optional<ClaimedWork> mid, qa->Claim(true));
  ASSERT_TRUE(mid.has_value());
  EXPECT_EQ(mid->spec, "mid");
  ASSERT_OK_AND_ASSIGN(std::optional<ClaimedWork> none, qb->Claim(true));
  EXPECT_FALSE(none.has_value());
  ASSERT_THAT(qa->Drop(job), IsOk());
  ASSERT_OK_AND_ASSIGN(results, qa->Results(job));
  EXPECT_THAT(results, IsEmpty());
}

}  // namespace
}  // namespace reprod::storage
