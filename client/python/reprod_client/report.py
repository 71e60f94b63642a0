"""Report: a stored comparison report, as a read-only mapping.

`Client.compare` and the last item of `Client.watch` return a `Report`. It
wraps the reprod.v1.Report message whose `rendered` field holds the
reprod.report.v1 JSON (docs/design.md §Report JSON contract) and behaves as a
Mapping over that JSON document::

    report["summary"]["failed"], report["tensors"][0]["stats"]["max_abs"]

Other renderings (reprod_log's log lines, Markdown, JUnit XML) are fetched
from ReportService.GetReport on demand and cached.
"""
import datetime
import json
from collections.abc import Mapping

__all__ = ["Report", "verdict_to_dict", "address_to_dict"]

# Lowercase TensorStatus names as in the JSON report ("pass", "missing_in_ref").
_STATUS_NAMES = {
    0: "unspecified", 1: "pass", 2: "warn", 3: "fail", 4: "missing_in_ref",
    5: "missing_in_cand", 6: "shape_mismatch",
}


def address_to_dict(address):
    """{"checkpoint", "key", "step"} from a reprod.v1.TensorAddress (step is
    None when absent), plus "rank" when the address has a rank other than 0
    (a multi-rank run)."""
    out = {"checkpoint": address.checkpoint, "key": address.key,
           "step": address.step if address.HasField("step") else None}
    if address.rank:
        out["rank"] = int(address.rank)
    return out


def verdict_to_dict(verdict):
    """A reprod.v1.TensorVerdict as a dict shaped like a report's "tensors"
    entry: checkpoint, key, step, status ("pass", "fail", ...), reason and
    stats (count, mean_abs, max_abs, mean_rel, max_rel, rmse, cosine,
    mismatches, max_abs_index, ref_at_max, cand_at_max)."""
    out = address_to_dict(verdict.address)
    out["status"] = _STATUS_NAMES.get(verdict.status, str(verdict.status))
    out["reason"] = verdict.reason
    out["stats"] = {
        "count": verdict.count, "mean_abs": verdict.mean_abs,
        "max_abs": verdict.max_abs, "mean_rel": verdict.mean_rel,
        "max_rel": verdict.max_rel, "rmse": verdict.rmse,
        "cosine": verdict.cosine, "mismatches": verdict.mismatches,
        "max_abs_index": list(verdict.max_abs_index),
        "ref_at_max": verdict.ref_at_max, "cand_at_max": verdict.cand_at_max,
    }
    return out


class Report(Mapping):
    """A comparison report (read-only Mapping over its reprod.report.v1 JSON).

    Attributes: id ("rpt-..."), passed, first_failure ({checkpoint, key,
    step} or None), first_divergence (dict or None), summary (dict), ref,
    cand, policy, backend, proto (the
    reprod.v1.Report message).

    Multi-rank runs (every rank of a distributed job logging into one run)
    add: `ranks` (per-rank counts and first failure / divergence),
    `global_tensors` (merged statistics of sharded tensors),
    `replica_mismatches` (replicated tensors whose ranks disagree), and a
    "rank" in every entry of report["tensors"] (`tensor_rank`) and in
    first_divergence. Single-rank reports have none of them: the properties
    then return [] (and tensor_rank 0).
    """

    def __init__(self, proto, client=None):
        self.proto = proto
        self._client = client
        self._renderings = {}
        if proto.rendered:
            try:
                self._doc = json.loads(proto.rendered)
            except ValueError:
                self._doc = None
            if not isinstance(self._doc, dict):
                self._doc = None
        else:
            self._doc = None
        if self._doc is None:
            # Not JSON (another format was requested): build the essentials
            # from the message's own fields.
            self._doc = {
                "passed": proto.passed, "ref": proto.ref, "cand": proto.cand,
                "policy": proto.policy, "summary": self._summary_from_proto(),
                "first_failure": (address_to_dict(proto.first_failure)
                                  if proto.HasField("first_failure") else None),
            }
        else:
            self._renderings["json"] = proto.rendered

    def _summary_from_proto(self):
        s = self.proto.summary
        return {"tensors": s.tensors, "passed": s.passed, "warned": s.warned,
                "failed": s.failed, "missing_in_ref": s.missing_in_ref,
                "missing_in_cand": s.missing_in_cand}

    # Mapping protocol over the JSON document.
    def __getitem__(self, key):
        return self._doc[key]

    def __iter__(self):
        return iter(self._doc)

    def __len__(self):
        return len(self._doc)

    @property
    def id(self):
        """The server-assigned report id ("rpt-" + 16 hex digits)."""
        return self.proto.id

    @property
    def passed(self):
        """True when every tensor pair passed its policy."""
        return bool(self.proto.passed)

    @property
    def signatures(self):
        """Verdict sign-offs on a review server, oldest first: dicts with
        signer_label, signer_role, time (UTC datetime), ref_run, cand_run,
        ref_run_digest, cand_run_digest, policy_hash, policy_hash_of,
        server_version, sequence, chain_head, hash. Empty when unsigned (and
        in listings)."""
        out = []
        for sig in self.proto.signatures:
            out.append({
                "signer_label": sig.signer_label, "signer_role": sig.signer_role,
                "time": sig.time.ToDatetime(tzinfo=datetime.timezone.utc),
                "ref_run": sig.ref_run, "cand_run": sig.cand_run,
                "ref_run_digest": sig.ref_run_digest, "cand_run_digest": sig.cand_run_digest,
                "policy_hash": sig.policy_hash, "policy_hash_of": sig.policy_hash_of,
                "server_version": sig.server_version, "sequence": sig.sequence,
                "chain_head": sig.chain_head, "hash": sig.hash})
        return out

    @property
    def first_failure(self):
        """{"checkpoint", "key", "step"} of the first non-passing tensor in
        producer order, or None when all passed."""
        ff = self._doc.get("first_failure")
        if ff is None and self.proto.HasField("first_failure"):
            ff = address_to_dict(self.proto.first_failure)
        return dict(ff) if ff is not None else None

    @property
    def first_divergence(self):
        """The first module whose captured tensors diverge (capture()),
        as {"checkpoint", "module", "direction", "step", "key", "reason",
        "inputs", "passed_before", "unmatched"} (and "rank" in a multi-rank
        report); None when none does or the report was fetched in a format
        other than JSON."""
        fd = self._doc.get("first_divergence")
        return dict(fd) if fd is not None else None

    @property
    def ranks(self):
        """Per rank of a multi-rank report, by rank: {"rank", "tensors",
        "passed", "failed", "first_failure" ({checkpoint, key, step} or
        None), "first_divergence" (as `first_divergence`, or None)}. [] for
        a single-rank report."""
        return [dict(r) for r in self._doc.get("ranks") or []]

    def rank(self, rank):
        """The `ranks` entry of `rank`; KeyError when the report has none."""
        for r in self._doc.get("ranks") or []:
            if r.get("rank") == rank:
                return dict(r)
        raise KeyError(f"report {self.id or '?'} has no rank {rank}")

    @property
    def global_tensors(self):
        """Sharded tensors merged across ranks: report tensor objects whose
        stats are those of the whole global tensor, each with "ranks" (the
        ranks whose pieces it merges). [] when there are none."""
        return [dict(t) for t in self._doc.get("global_tensors") or []]

    @property
    def replica_mismatches(self):
        """Replicated tensors whose ranks are not identical: {"run" ("ref" or
        "cand"), "checkpoint", "key", "step", "rank", "against_rank",
        "reason"}. [] when every replica agrees (or there are none)."""
        return [dict(m) for m in self._doc.get("replica_mismatches") or []]

    @staticmethod
    def tensor_rank(tensor):
        """The rank of a report["tensors"] entry (0 when it has none: a
        single-rank report)."""
        return int(tensor.get("rank", 0) or 0)

    def tensors_of_rank(self, rank):
        """The report["tensors"] entries of `rank` (all of them for rank 0 of
        a single-rank report)."""
        return [t for t in self._doc.get("tensors") or [] if self.tensor_rank(t) == rank]

    @property
    def summary(self):
        """Counts: tensors, passed, warned, failed, missing_in_ref,
        missing_in_cand."""
        return dict(self._doc.get("summary") or self._summary_from_proto())

    @property
    def ref(self):
        return self.proto.ref

    @property
    def cand(self):
        return self.proto.cand

    @property
    def policy(self):
        return self.proto.policy

    @property
    def backend(self):
        return self.proto.backend

    def to_dict(self):
        """The JSON document as a plain dict (a deep copy)."""
        return json.loads(json.dumps(self._doc))

    def json(self):
        """The reprod.report.v1 JSON text."""
        return self._render("json")

    def text(self):
        """reprod_log's log lines for every pair (fetched from the server)."""
        return self._render("text")

    def markdown(self):
        """The report as Markdown (fetched from the server)."""
        return self._render("markdown")

    def junit(self):
        """The report as JUnit XML (fetched from the server)."""
        return self._render("junit")

    def html(self):
        """The report as one self-contained HTML page (inline CSS and SVG,
        no script, nothing fetched; fetched from the server)."""
        return self._render("html")

    def _render(self, fmt):
        if fmt not in self._renderings:
            if self._client is None or not self.id:
                raise ValueError(f"report has no id or client to fetch its {fmt} rendering")
            self._renderings[fmt] = self._client._get_report_proto(self.id, fmt).rendered
        return self._renderings[fmt]

    def __repr__(self):
        s = self.summary
        verdict = "passed" if self.passed else "FAILED"
        ff = self.first_failure
        first = ""
        if ff is not None:
            step = "" if ff.get("step") is None else f"@{ff['step']}"
            first = f", first failure {ff['checkpoint']}/{ff['key']}{step}"
        return (f"<Report {self.id or '?'} {self.ref} vs {self.cand}: {verdict} "
                f"({s.get('passed', 0)}/{s.get('tensors', 0)} passed{first})>")
