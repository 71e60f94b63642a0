#include "server/compare_service.h"

#include <atomic>
#include <set>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/names.h"
#include "common/status_macros.h"
#include "proto/wire.h"
#include "server/auth_gate.h"
#include "server/metrics/server_metrics.h"
#include "server/review_ops.h"
#include "server/proto_convert.h"
#include "server/compare_worker.h"
#include "server/store_compare.h"
#include "server/stored_report.h"
#include "spdlog/spdlog.h"

namespace reprod::server {
namespace {

StoreCompareOptions OptionsFromSpec(const v1::PolicySpec& spec) {
  StoreCompareOptions options;
  options.compare.checkpoints.assign(spec.checkpoints().begin(),
                                     spec.checkpoints().end());
  return options;
}

absl::Status CheckRuns(storage::Store& store, std::string_view ref,
                       std::string_view cand) {
  for (std::string_view name : {ref, cand}) {
    REPROD_RETURN_IF_ERROR(ValidateRunName(name));
    REPROD_RETURN_IF_ERROR(store.GetRun(name).status());
  }
  return absl::OkStatus();
}

bool Finished(storage::RunState s) { return s != storage::RunState::kOpen; }

}  // namespace

namespace {

absl::StatusOr<core::Policy> BasePolicyFromSpec(const v1::PolicySpec& spec) {
  switch (spec.source_case()) {
    case v1::PolicySpec::kPreset:
      return core::PresetPolicy(spec.preset());
    case v1::PolicySpec::kDocument:
      return core::ParsePolicy(spec.document(), "<request policy>");
    case v1::PolicySpec::SOURCE_NOT_SET:
      break;
  }
  return core::PresetPolicy("reprod");
}

}  // namespace

absl::StatusOr<core::Policy> PolicyFromSpec(const v1::PolicySpec& spec) {
  REPROD_ASSIGN_OR_RETURN(core::Policy policy, BasePolicyFromSpec(spec));
  policy.as_bf16.insert(policy.as_bf16.end(), spec.as_bf16().begin(),
                        spec.as_bf16().end());
  if (!spec.shapes().empty()) {
    REPROD_ASSIGN_OR_RETURN(policy.shapes, core::ParseShapeMode(spec.shapes()));
  }
  return policy;
}

absl::Status CompareServiceImpl::CompareAndStore(
    std::string_view ref, std::string_view cand, const core::Policy& policy,
    const v1::PolicySpec& spec, v1::ReportFormat format,
    v1::Report* response) {
  // Refuse a bad format before the (long) comparison, not after it.
  REPROD_RETURN_IF_ERROR(ReportFormatFromProto(format).status());
  const absl::Time start = absl::Now();
  std::atomic<uint64_t> compared_bytes{0};
  StoreCompareOptions options = OptionsFromSpec(spec);
  options.compared_bytes = &compared_bytes;
  // Replicas sharing the store (postgres+s3) take part of a finished pair
  // of runs' compare (store_compare.h); nullptr elsewhere.
  options.work_queue = env_.store->work_queue();
  options.claim_largest_first = ClaimsLargestFirst(*env_.backend);
  REPROD_ASSIGN_OR_RETURN(
      core::Report report,
      CompareStoredRuns(*env_.store, ref, cand, policy, *env_.backend, options));
  if (env_.metrics != nullptr) {
    env_.metrics->Compared(env_.backend->name(), absl::ToDoubleSeconds(absl::Now() - start),
                           compared_bytes.load());
  }
  REPROD_ASSIGN_OR_RETURN(storage::StoredReport stored,
                          MakeStoredReport(report, absl::Now()));
  stored.policy_hash = PolicySpecHash(spec);  // what a signed verdict binds
  REPROD_RETURN_IF_ERROR(env_.store->PutReport(stored));
  spdlog::info("report {}: {} vs {} {} ({} tensors, {} failed) in {}",
               stored.id, std::string(ref), std::string(cand),
               report.passed ? "passed" : "FAILED", report.summary.tensors,
               report.summary.failed + report.summary.missing_in_ref +
                   report.summary.missing_in_cand,
               absl::FormatDuration(absl::Now() - start));
  return ReportToProto(stored, format, /*with_rendering=*/true, response);
}

grpc::Status CompareServiceImpl::Compare(grpc::ServerContext* context,
                                         const v1::CompareRequest* request,
                                         v1::Report* response) {
  RunEvents::CallGuard guard(env_.events);
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteCompare, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  if (absl::Status s = CheckRuns(*env_.store, request->ref(), request->cand());
      !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<core::Policy> policy = PolicyFromSpec(request->policy());
  if (!policy.ok()) return wire::ToGrpcStatus(policy.status());
  return wire::ToGrpcStatus(CompareAndStore(request->ref(), request->cand(), *policy,
                                      request->policy(), request->format(),
                                      response));
}

grpc::Status CompareServiceImpl::Watch(
    grpc::ServerContext* context, const v1::WatchRequest* request,
    grpc::ServerWriter<v1::WatchEvent>* writer) {
  RunEvents::CallGuard guard(env_.events);
  absl::StatusOr<std::optional<auth::Principal>> who =
      CheckCall(env_, context, kRouteWatch, *request);
  if (!who.ok()) return wire::ToGrpcStatus(who.status());
  const std::string& ref = request->ref();
  const std::string& cand = request->cand();
  if (absl::Status s = CheckRuns(*env_.store, ref, cand); !s.ok()) {
    return wire::ToGrpcStatus(s);
  }
  absl::StatusOr<core::Policy> policy = PolicyFromSpec(request->policy());
  if (!policy.ok()) return wire::ToGrpcStatus(policy.status());
  if (absl::StatusOr<core::ReportFormat> f =
          ReportFormatFromProto(request->format());
      !f.ok()) {
    return wire::ToGrpcStatus(f.status());
  }

  // (checkpoint, key, step, rank): a tensor's rank is set only once the
  // report is multi-rank, so an unset one counts as rank 0.
  using Key = std::tuple<std::string, std::string, std::optional<int64_t>, uint32_t>;
  std::set<Key> emitted;
  uint64_t seen = env_.events->version();
  while (true) {
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
    }
    if (env_.events->shutting_down()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server shutting down; watch again after restart");
    }
    // Read the states before the tensors: if both runs were finished then,
    // the listing below is complete.
    absl::StatusOr<storage::RunInfo> ref_run = env_.store->GetRun(ref);
    if (!ref_run.ok()) return wire::ToGrpcStatus(ref_run.status());
    absl::StatusOr<storage::RunInfo> cand_run = env_.store->GetRun(cand);
    if (!cand_run.ok()) return wire::ToGrpcStatus(cand_run.status());
    const bool done = Finished(ref_run->state) && Finished(cand_run->state);

    StoreCompareOptions options = OptionsFromSpec(request->policy());
    options.compare.pair_filter = [&emitted](const core::TensorAddress& a) {
      return emitted.count(Key{a.checkpoint, a.key, a.step, a.rank.value_or(0)}) == 0;
    };
    absl::StatusOr<core::Report> fresh = CompareStoredRuns(
        *env_.store, ref, cand, *policy, *env_.backend, options);
    if (!fresh.ok()) return wire::ToGrpcStatus(fresh.status());
    for (const core::TensorResult& t : fresh->tensors) {
      if (t.status == core::TensorStatus::kMissingInRef ||
          t.status == core::TensorStatus::kMissingInCand) {
        continue;
      }
      if (!emitted.insert(Key{t.checkpoint, t.key, t.step, t.rank.value_or(0)}).second) continue;
      v1::WatchEvent event;
      VerdictToProto(t, event.mutable_verdict());
      if (!writer->Write(event)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
      }
    }
    if (done) {
      v1::WatchEvent event;
      absl::Status s =
          CompareAndStore(ref, cand, *policy, request->policy(),
                          request->format(), event.mutable_report());
      if (!s.ok()) return wire::ToGrpcStatus(s);
      writer->Write(event);
      return grpc::Status::OK;
    }
    seen = env_.events->WaitForChange(
        seen, absl::Milliseconds(env_.limits.watch_poll_ms));
  }
}

}  // namespace reprod::server
