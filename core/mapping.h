// File: core/mapping.h
//
// Module name mapping between two implementations of one model (torch's
// `bert.encoder.layer.0.attention.self.query` is paddle's
// `bert.encoder.layers.0.self_attn.q_proj`): suggested from two captured runs
// (reprod_client.capture()) by the modules' forward outputs, and written as
// policy `rename` entries (core/policy.h) that `reprodctl suggest-mapping`
// prints.
//
//   std::vector<ModuleOutputs> ref = ..., cand = ...;  // execution order
//   MappingSuggestion s = SuggestMapping(ref, cand);
//   std::string yaml = MappingYaml(s, "how it was made");
//
// Matching: a candidate module pairs with a reference module when their
// outputs have the same shapes and either the same path or the same values up
// to a loose tolerance (fingerprints: mean, mean |x|, root mean square per
// output). Among the
// order-preserving pairings (an alignment of the two execution orders) the
// one with the most pairs wins; ties prefer leaf with leaf and composite with
// composite modules (a parent whose output is its last child's has equal
// values) and then names that share more "."-separated parts. Pairs whose
// paths differ become RE2 rename entries, generalised over the numbers both
// paths share (layer indices), anchored on the whole module path; the entries
// are checked against every pair (and every module whose name is the same on
// both sides) and fall back to one literal entry per pair when a
// generalisation would rename something else.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_MAPPING_H_
#define REPROD_CORE_MAPPING_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/tensor.h"
#include "core/policy.h"

namespace reprod::core {

// What identifies one output tensor's values, cheaply.
struct OutputFingerprint {
  Shape shape;
  double mean = 0;
  double mean_abs = 0;
  double rms = 0;
};

// Mean, mean |x| and root mean square of `view` (NaN and Inf included as
// they are; an empty tensor gives zeros).
OutputFingerprint Fingerprint(const TensorView& view);

// One captured module: its path ("[root]" for the model itself) and the
// fingerprints of its forward outputs in index order.
struct ModuleOutputs {
  std::string module;
  std::vector<OutputFingerprint> outputs;
};

struct MappingSuggestion {
  // (candidate module, reference module), in candidate execution order.
  std::vector<std::pair<std::string, std::string>> pairs;
  // Regex entries mapping candidate keys "<module>/..." onto reference ones.
  std::vector<Rename> renames;
  // False when even literal entries could not map every pair (a candidate
  // path that is another pair's reference path, renamed twice, or a path
  // too long to escape into a pattern): the renames are then incomplete
  // and the YAML says so.
  bool consistent = true;
  std::vector<std::string> unmatched_ref, unmatched_cand;  // execution order
};

// `ref` and `cand` in execution order (the order of their first forward
// outputs in each run).
MappingSuggestion SuggestMapping(const std::vector<ModuleOutputs>& ref,
                                 const std::vector<ModuleOutputs>& cand);

// A policy fragment: `# header` comment lines, the `rename:` list (or
// `rename: []`), and the unmatched modules as comments. Parses with
// ParsePolicy.
std::string MappingYaml(const MappingSuggestion& s, std::string_view header);

}  // namespace reprod::core

#endif  // REPROD_CORE_MAPPING_H_
