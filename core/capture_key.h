// File: core/capture_key.h
//
// The keys reprod_client.capture() gives a module's tensors:
//
//   <module>/<direction>/<role>/<index...>
//   bert.encoder.layer.1.output.LayerNorm/forward/output/0
//   bert.encoder.layer.1.output.LayerNorm[1]/backward/grad_output/0   (2nd call)
//
// direction "forward" or "backward"; role "input", "output" (forward),
// "grad_output" (backward: the gradient of that output) or "param_grad"
// (backward: the gradient of the module's own parameter named by the index);
// index the output's position ("0", nested "1/0", a dict key "logits") or
// the parameter's name ("weight"). The model itself is
// "[root]". First-divergence localisation (report.h) and suggest-mapping
// (mapping.h) read them.
//
// Thread-safety: pure functions.
#ifndef REPROD_CORE_CAPTURE_KEY_H_
#define REPROD_CORE_CAPTURE_KEY_H_

#include <optional>
#include <string_view>

namespace reprod::core {

// The parts of a capture key (views into the key).
struct CaptureKey {
  std::string_view module;     // "bert.encoder.layer.1.output.LayerNorm", "m[1]"
  std::string_view direction;  // "forward" | "backward"
  std::string_view role;       // "input" | "output" | "grad_output" | "param_grad"
  std::string_view index;      // "0", "1/0", "logits", "weight"
};

// nullopt unless `key` has the capture form above.
std::optional<CaptureKey> ParseCaptureKey(std::string_view key);

}  // namespace reprod::core

#endif  // REPROD_CORE_CAPTURE_KEY_H_
