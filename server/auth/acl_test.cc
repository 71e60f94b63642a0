// The access table against the proto descriptors and docs/acl.md, and the
// full matrix: every RPC x every kind of caller, through real TokenStore
// lookups, ResolveTarget on real request messages and Authorize.
#include "server/auth/acl.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "reprod/v1/admin.pb.h"
#include "reprod/v1/compare.pb.h"
#include "reprod/v1/ingest.pb.h"
#include "reprod/v1/review.pb.h"
#include "reprod/v1/runs.pb.h"
#include "reprod/v1/shm.pb.h"
#include "reprod/v1/tensor.pb.h"
#include "storage/memory/memory_store.h"
#include "tests/testing/status_matchers.h"

namespace reprod::server::auth {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::MethodDescriptor;
using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

// Links every generated file of proto/reprod/v1 into this binary, so that
// the generated pool knows them (one message per file).
void LinkGeneratedFiles() {
  (void)v1::CreateRunRequest::descriptor();
  (void)v1::IngestRequest::descriptor();
  (void)v1::CompareRequest::descriptor();
  (void)v1::TensorAddress::descriptor();
  (void)v1::CreateTokenRequest::descriptor();
  (void)v1::BackupRequest::descriptor();
  (void)v1::ShmRequest::descriptor();
}

// Every RPC of every service in proto/reprod/v1/*.proto, as "/pkg.Svc/M".
std::map<std::string, const MethodDescriptor*> ProtoMethods() {
  LinkGeneratedFiles();
  std::map<std::string, const MethodDescriptor*> out;
  const std::filesystem::path dir = std::filesystem::path(REPROD_SOURCE_DIR) / "proto/reprod/v1";
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".proto") continue;
    ++files;
    const std::string name = "reprod/v1/" + entry.path().filename().string();
    const google::protobuf::FileDescriptor* file =
        DescriptorPool::generated_pool()->FindFileByName(name);
    EXPECT_NE(file, nullptr) << name << " is not linked: add one of its "
                             << "messages to LinkGeneratedFiles()";
    if (file == nullptr) continue;
    for (int s = 0; s < file->service_count(); ++s) {
      for (int m = 0; m < file->service(s)->method_count(); ++m) {
        const MethodDescriptor* method = file->service(s)->method(m);
        out["/" + method->service()->full_name() + "/" + method->name()] = method;
      }
    }
  }
  EXPECT_GE(files, 4u);
  return out;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AclTableTest, EveryProtoRpcIsInTheTableAndNothingStale) {
  const auto methods = ProtoMethods();
  ASSERT_GE(methods.size(), 12u);
  for (const auto& [route, method] : methods) {
    const AclEntry* e = FindAclEntry(route);
    ASSERT_NE(e, nullptr) << route << " is missing from server/auth/acl.cc";
    EXPECT_FALSE(e->planned) << route << " exists: it is built, not planned";
    EXPECT_FALSE(e->http) << route;
    EXPECT_EQ(e->per_message, method->client_streaming()) << route;
  }
  std::set<std::string> routes;
  for (const AclEntry& e : AclTable()) {
    EXPECT_TRUE(routes.insert(std::string(e.route)).second) << "duplicate " << e.route;
    if (!e.http && e.route.starts_with("/reprod.")) {
      EXPECT_EQ(methods.contains(std::string(e.route)), !e.planned)
          << e.route << ": built entries must be RPCs of the protos and "
          << "planned ones must not";
    }
  }
}

TEST(AclTableTest, TargetFieldsNameStringFieldsOfTheRequest) {
  for (const auto& [route, method] : ProtoMethods()) {
    const AclEntry& e = *FindAclEntry(route);
    const bool run_based = e.access == Access::kReadRun || e.access == Access::kWriteRun ||
                           e.access == Access::kCompareRuns;
    // Run-based access needs the runs; admin entries may name theirs too.
    if (run_based) {
      EXPECT_NE(e.target, TargetKind::kNone) << route;
    }
    if (e.access == Access::kPublic || e.access == Access::kAuthenticated) {
      EXPECT_EQ(e.target, TargetKind::kNone) << route;
    }
    std::unique_ptr<Message> request(google::protobuf::MessageFactory::generated_factory()
                                         ->GetPrototype(method->input_type())
                                         ->New());
    EXPECT_THAT(TargetValues(e, *request), IsOk()) << route;
  }
}

TEST(AclTableTest, DocsAreTheRenderedTable) {
  const std::string rendered = RenderAclMarkdown();
  if (const char* path = std::getenv("REPROD_WRITE_ACL_MD")) {
    std::ofstream(path) << rendered;
  }
  const std::string docs = ReadFile(std::filesystem::path(REPROD_SOURCE_DIR) / "docs/acl.md");
  EXPECT_EQ(docs, rendered) << "docs/acl.md is stale; replace it with:\n" << rendered;
  for (const AclEntry& e : AclTable()) {
    EXPECT_THAT(rendered, HasSubstr(std::string(e.route)));
  }
}

// The access-kind rows of docs/acl.md say "yes"/"no" per caller; each cell
// must agree with Authorize on a route of that kind and a run in the
// submitter's scope (the submitter cells that name a condition are "yes"
// there).
TEST(AclTableTest, DocumentedAccessKindsAgreeWithAuthorize) {
  ASSERT_OK_AND_ASSIGN(Scope team42, Scope::Parse("team42"));
  Principal sub, judge, admin;
  sub.label = "s";
  sub.scope = team42;
  judge.label = "j";
  judge.role = Role::kJudge;
  admin.label = "a";
  admin.role = Role::kAdmin;
  const Principal* callers[] = {nullptr, &sub, &judge, &admin};
  const Target own{{RunTarget{"team42/run", false}}};
  const std::string rendered = RenderAclMarkdown();
  int rows = 0;
  const std::vector<std::string> lines = absl::StrSplit(rendered, '\n');
  for (const std::string& line : lines) {
    const std::vector<std::string> cells = absl::StrSplit(line, " | ");
    if (cells.size() != 5 || !cells[0].starts_with("| ")) continue;
    const std::string kind = cells[0].substr(2);
    for (const AclEntry& e : AclTable()) {
      if (AccessName(e.access) != kind) continue;
      ++rows;
      const Target target = e.target == TargetKind::kNone ? Target{} : own;
      for (size_t c = 0; c < 4; ++c) {
        std::string cell = cells[c + 1];
        if (c == 3) cell = cell.substr(0, cell.size() - 2);  // " |"
        const bool ok = Authorize(callers[c], e.route, target).ok();
        EXPECT_EQ(ok, cell != "no") << kind << " column " << c << ": " << cell;
      }
      break;
    }
  }
  EXPECT_EQ(rows, 7);
}

TEST(AclTableTest, UnknownRoutesAreDeniedEvenToAdmins) {
  Principal admin;
  admin.label = "root";
  admin.role = Role::kAdmin;
  EXPECT_THAT(Authorize(&admin, "/reprod.v1.RunService/Nope", {}),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not in the access table")));
  EXPECT_THAT(Authorize(nullptr, "/x.Y/Z", {}),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("/x.Y/Z")));
  EXPECT_THAT(Authorize(nullptr, "/grpc.health.v1.Health/Check", {}), IsOk());
  EXPECT_THAT(Authorize(&admin, "/reprod.v1.RunService/GetRun", {}),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("run(s)")));
}

// --- the matrix --------------------------------------------------------------

// Sets the string at a dotted path of `msg` (creating parents).
void SetPath(Message& msg, std::string_view path, const std::string& value) {
  Message* m = &msg;
  const std::vector<std::string> parts = absl::StrSplit(std::string(path), '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(parts[i]);
    ASSERT_NE(f, nullptr) << path;
    m = m->GetReflection()->MutableMessage(m, f);
  }
  const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(parts.back());
  ASSERT_NE(f, nullptr) << path;
  m->GetReflection()->SetString(m, f, value);
}

// One row per RPC, written by hand from the rules (not from the table):
// where the request names its runs, and the outcome for the callers
//   none, bad, expired, revoked, submitter-in, submitter-out, judge, admin
// as U (UNAUTHENTICATED), D (PERMISSION_DENIED) or + (OK).
struct Row {
  std::vector<std::string> run_fields;  // the runs, in ref, cand order
  bool report = false;                  // the field is a report id
  std::string outcomes;
};

const std::map<std::string, Row>& Expected() {
  static const auto* rows = new std::map<std::string, Row>{
      {"/reprod.v1.RunService/CreateRun", {{"run.name"}, false, "UUUU+DD+"}},
      {"/reprod.v1.RunService/GetRun", {{"name"}, false, "UUUU+D++"}},
      {"/reprod.v1.RunService/ListRuns", {{}, false, "UUUU++++"}},
      {"/reprod.v1.RunService/SealRun", {{"name"}, false, "UUUU+DD+"}},
      {"/reprod.v1.RunService/DeleteRun", {{"name"}, false, "UUUUDDD+"}},
      {"/reprod.v1.RunService/ListTensors", {{"run"}, false, "UUUU+D++"}},
      {"/reprod.v1.RunService/ReadTensor", {{"run"}, false, "UUUU+D++"}},
      {"/reprod.v1.IngestService/Ingest", {{"begin.run"}, false, "UUUU+DD+"}},
      {"/reprod.v1.SharedMemoryService/Session", {{"tensor.begin.run"}, false, "UUUU+DD+"}},
      {"/reprod.v1.CompareService/Compare", {{"ref", "cand"}, false, "UUUU+D++"}},
      {"/reprod.v1.CompareService/Watch", {{"ref", "cand"}, false, "UUUU+D++"}},
      {"/reprod.v1.ReportService/GetReport", {{"id"}, true, "UUUU+D++"}},
      {"/reprod.v1.ReportService/ListReports", {{}, false, "UUUU++++"}},
      {"/reprod.v1.RunService/SetReference", {{"name"}, false, "UUUUDD++"}},
      {"/reprod.v1.ReportService/SignReport", {{"id"}, true, "UUUUDD++"}},
      {"/reprod.v1.TokenService/CreateToken", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.TokenService/ListTokens", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.TokenService/RevokeToken", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.AuditService/ListEvents", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.AuditService/VerifyAudit", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.AdminService/Backup", {{}, false, "UUUUDDD+"}},
      {"/reprod.v1.AdminService/Compact", {{}, false, "UUUUDDD+"}},
  };
  return *rows;
}

class AclMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::RunInfo ref;
    ref.name = kReference;
    ref.reference = true;
    ASSERT_THAT(store_->CreateRun(ref), IsOk());
    for (const char* name : {kOwn, kOther}) {
      storage::RunInfo run;
      run.name = name;
      ASSERT_THAT(store_->CreateRun(run), IsOk());
    }
    storage::StoredReport in, out;
    in.id = "rpt-in";
    in.ref = kReference;
    in.cand = kOwn;
    out.id = "rpt-out";
    out.ref = kReference;
    out.cand = kOther;
    ASSERT_THAT(store_->PutReport(in), IsOk());
    ASSERT_THAT(store_->PutReport(out), IsOk());

    auto make = [&](Role role, std::string scope, std::string label,
                    std::optional<absl::Duration> expires = std::nullopt) {
      TokenSpec spec;
      spec.role = role;
      spec.scope = std::move(scope);
      spec.label = std::move(label);
      spec.expires_in = expires;
      absl::StatusOr<IssuedToken> t = tokens_.Create(spec, kNow - absl::Hours(2));
      EXPECT_THAT(t, IsOk());
      return t.ok() ? t->token : std::string();
    };
    tokens_by_caller_ = {
        "",  // none
        "rpd_" + std::string(64, '0'),
        make(Role::kAdmin, "", "expired", absl::Hours(1)),
        make(Role::kAdmin, "", "revoked"),
        make(Role::kSubmitter, "team42", "team42"),
        make(Role::kSubmitter, "team42", "team42 too"),
        make(Role::kJudge, "", "judge"),
        make(Role::kAdmin, "", "admin"),
    };
    ASSERT_OK_AND_ASSIGN(auto all, tokens_.List());
    for (const TokenRecord& r : all) {
      if (r.label == "revoked") {
        ASSERT_THAT(tokens_.Revoke(r.id()), IsOk());
      }
    }
  }

  // The outcome of `route` for caller `c`: in-scope requests for every
  // caller but the submitter-out column, which asks for the other team's
  // run (or a report of it).
  char Outcome(const std::string& route, const MethodDescriptor* method, const Row& row, size_t c) {
    const bool out = c == 5;
    std::unique_ptr<Message> request(google::protobuf::MessageFactory::generated_factory()
                                         ->GetPrototype(method->input_type())
                                         ->New());
    if (row.report) {
      SetPath(*request, row.run_fields[0], out ? "rpt-out" : "rpt-in");
    } else if (row.run_fields.size() == 2) {  // ref, cand
      SetPath(*request, row.run_fields[0], kReference);
      SetPath(*request, row.run_fields[1], out ? kOther : kOwn);
    } else if (row.run_fields.size() == 1) {
      SetPath(*request, row.run_fields[0], out ? kOther : kOwn);
    }
    const AclEntry* entry = FindAclEntry(route);
    if (entry == nullptr) return '?';
    absl::StatusOr<Target> target = ResolveTarget(*entry, *request, *store_);
    EXPECT_THAT(target, IsOk()) << route;
    if (!target.ok()) return '?';
    absl::StatusOr<Principal> who = tokens_.Authenticate(tokens_by_caller_[c], kNow);
    if (c < 4) {
      EXPECT_THAT(who, StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
    }
    const absl::Status s = Authorize(who.ok() ? &*who : nullptr, route, *target);
    switch (s.code()) {
      case absl::StatusCode::kOk:
        return '+';
      case absl::StatusCode::kUnauthenticated:
        return 'U';
      case absl::StatusCode::kPermissionDenied:
        return 'D';
      default:
        ADD_FAILURE() << route << ": " << s;
        return '?';
    }
  }

  static constexpr char kReference[] = "upstream/bert-torch";
  static constexpr char kOwn[] = "team42/bert-paddle";
  static constexpr char kOther[] = "team7/bert-paddle";
  std::unique_ptr<storage::Store> store_ = storage::CreateMemoryStore();
  TokenStore tokens_{*store_};
  std::vector<std::string> tokens_by_caller_;
};

TEST_F(AclMatrixTest, EveryRpcForEveryCaller) {
  const auto methods = ProtoMethods();
  for (const auto& [route, method] : methods) {
    auto it = Expected().find(route);
    ASSERT_NE(it, Expected().end()) << route << " has no expected row in acl_test.cc";
    std::string got;
    for (size_t c = 0; c < 8; ++c) {
      got.push_back(Outcome(route, method, it->second, c));
    }
    EXPECT_EQ(got, it->second.outcomes) << route << " (none, bad, expired, revoked, submitter-in, "
                                        << "submitter-out, judge, admin)";
  }
  EXPECT_EQ(methods.size(), Expected().size());
}

TEST_F(AclMatrixTest, SubmitterComparesOwnRunsAndReferencesOnly) {
  ASSERT_OK_AND_ASSIGN(Principal p, tokens_.Authenticate(tokens_by_caller_[4], kNow));
  const std::string route = "/reprod.v1.CompareService/Compare";
  auto compare = [&](const std::string& ref, const std::string& cand) {
    v1::CompareRequest req;
    req.set_ref(ref);
    req.set_cand(cand);
    absl::StatusOr<Target> t = ResolveTarget(*FindAclEntry(route), req, *store_);
    EXPECT_THAT(t, IsOk());
    return Authorize(&p, route, t.ok() ? *t : Target{}).code();
  };
  using C = absl::StatusCode;
  EXPECT_EQ(compare(kReference, kOwn), C::kOk);
  EXPECT_EQ(compare(kOwn, kReference), C::kOk);
  EXPECT_EQ(compare(kOwn, "team42/other"), C::kOk);  // both own; one unknown
  EXPECT_EQ(compare(kReference, kReference), C::kPermissionDenied);
  EXPECT_EQ(compare(kOther, kOwn), C::kPermissionDenied);
  EXPECT_EQ(compare(kOwn, kOther), C::kPermissionDenied);
  // The flag is read from the store: clearing it closes the door.
  ASSERT_THAT(store_->SetRunReference(kReference, false), IsOk());
  EXPECT_EQ(compare(kReference, kOwn), C::kPermissionDenied);
  ASSERT_THAT(store_->SetRunReference(kOther, true), IsOk());
  EXPECT_EQ(compare(kOther, kOwn), C::kOk);
}

TEST_F(AclMatrixTest, ReferenceRunsAreReadableButNotWritableBySubmitters) {
  ASSERT_OK_AND_ASSIGN(Principal p, tokens_.Authenticate(tokens_by_caller_[4], kNow));
  const Target ref{{RunTarget{kReference, true}}};
  EXPECT_THAT(Authorize(&p, "/reprod.v1.RunService/GetRun", ref), IsOk());
  EXPECT_THAT(Authorize(&p, "/reprod.v1.RunService/ReadTensor", ref), IsOk());
  EXPECT_THAT(Authorize(&p, "/reprod.v1.RunService/SealRun", ref),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("may not write run upstream/bert-torch")));
  EXPECT_THAT(
      Authorize(&p, "/reprod.v1.IngestService/Ingest", ref),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("'team42' (submitter of team42)")));
}

TEST_F(AclMatrixTest, ListFiltersAndPerMessageTargets) {
  ASSERT_OK_AND_ASSIGN(Principal sub, tokens_.Authenticate(tokens_by_caller_[4], kNow));
  ASSERT_OK_AND_ASSIGN(Principal judge, tokens_.Authenticate(tokens_by_caller_[6], kNow));
  const RunTarget own{kOwn, false}, other{kOther, false}, ref{kReference, true};
  EXPECT_TRUE(CanSeeRun(sub, own));
  EXPECT_TRUE(CanSeeRun(sub, ref));
  EXPECT_FALSE(CanSeeRun(sub, other));
  EXPECT_TRUE(CanSeeRun(judge, other));
  EXPECT_TRUE(CanSeeReport(sub, ref, own));
  EXPECT_FALSE(CanSeeReport(sub, ref, other));
  EXPECT_FALSE(CanSeeReport(sub, ref, ref));
  EXPECT_TRUE(CanSeeReport(judge, ref, other));

  // A chunk message of an Ingest stream names no run: nothing to check.
  v1::IngestRequest chunk;
  chunk.mutable_chunk()->set_offset(0);
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> values,
                       TargetValues(*FindAclEntry("/reprod.v1.IngestService/Ingest"), chunk));
  EXPECT_TRUE(values.empty());
  // An unknown report is NotFound from ResolveTarget.
  v1::GetReportRequest get;
  get.set_id("rpt-none");
  EXPECT_THAT(ResolveTarget(*FindAclEntry("/reprod.v1.ReportService/GetReport"), get, *store_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("rpt-none")));
}

}  // namespace
}  // namespace reprod::server::auth
