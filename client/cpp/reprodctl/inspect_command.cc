// reprodctl inspect FILE...: what a tensor file holds.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/progress.h"
#include "client/cpp/reprodctl/commands.h"
#include "common/visible.h"
#include "core/py_float.h"
#include "formats/tensor_file.h"
#include "kernels/tensor_summary.h"
#include "nlohmann/json.hpp"

namespace reprod::reprodctl {
namespace {

constexpr char kInspectHelp[] = R"(List the tensors of one or more files: key, dtype, shape,
min / max / mean over the finite values, and NaN / Inf counts.

Examples:
  reprodctl inspect forward_paddle.npy
  reprodctl inspect model.pdparams --format json)";

struct InspectArgs {
  std::vector<std::string> files;
  std::string format = "text";
  formats::ReadOptions read;
};

nlohmann::json JsonNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

int RunInspect(const InspectArgs& args, const GlobalOptions& global) {
  nlohmann::json files = nlohmann::json::array();
  std::string text;
  client::ProgressTicker progress(!global.quiet);
  for (const std::string& path : args.files) {
    progress.Set(absl::StrCat("reading ", path));
    auto file = formats::ReadTensorFile(path, args.read);
    if (!file.ok()) return ReportError(file.status());
    nlohmann::json tensors = nlohmann::json::array();
    absl::StrAppend(&text, VisibleText(path), " (", formats::FileFormatName(file->format), ", ",
                    file->tensors.size(), " tensors)\n");
    absl::StrAppendFormat(&text, "  %-40s %-9s %-16s %12s %12s %12s %6s %6s\n", "key", "dtype",
                          "shape", "min", "max", "mean", "nan", "inf");
    for (const NamedTensor& t : file->tensors) {
      progress.Set(absl::StrCat("summarising ", path, ": ", t.key));
      auto s = kernels::Summarize(t.tensor.view());
      if (!s.ok()) return ReportError(s.status());
      const bool any_finite = s->finite > 0;
      nlohmann::json shape = nlohmann::json::array();
      for (int64_t d : t.tensor.shape()) shape.push_back(d);
      tensors.push_back({{"key", t.key},
                         {"dtype", std::string(DTypeName(t.tensor.dtype()))},
                         {"shape", shape},
                         {"count", s->count},
                         {"min", any_finite ? JsonNumber(s->min) : nlohmann::json()},
                         {"max", any_finite ? JsonNumber(s->max) : nlohmann::json()},
                         {"mean", any_finite ? JsonNumber(s->mean) : nlohmann::json()},
                         {"nan", s->nan_count},
                         {"inf", s->inf_count}});
      auto num = [&](double v) { return any_finite ? absl::StrFormat("%.6g", v) : std::string("-"); };
      absl::StrAppendFormat(&text, "  %-40s %-9s %-16s %12s %12s %12s %6d %6d\n",
                            VisibleText(t.key), std::string(DTypeName(t.tensor.dtype())),
                            ShapeToString(t.tensor.shape()),
                            num(s->min), num(s->max), num(s->mean), s->nan_count, s->inf_count);
    }
    for (const std::string& skipped : file->skipped) {
      absl::StrAppend(&text, "  skipped ", VisibleText(skipped), "\n");
    }
    files.push_back({{"file", path},
                     {"format", formats::FileFormatName(file->format)},
                     {"tensors", tensors},
                     {"skipped", file->skipped}});
  }
  std::string out;
  if (args.format == "json") {
    // One file: the file object itself; several: a list.
    out = JsonText(files.size() == 1 ? files[0] : files) + "\n";
  } else {
    out = text;
  }
  if (auto s = WriteOutput("", out); !s.ok()) return ReportError(s);
  return kExitPass;
}

}  // namespace

Runner RegisterInspect(CLI::App& app, const GlobalOptions& global) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand("inspect", "Keys, dtypes, shapes and value ranges of tensor files");
  cmd->footer(kInspectHelp);
  cmd->add_option("FILE", args->files,
                  absl::StrCat("Tensor files (", formats::TensorFileExtensionList(), ")"))
      ->required();
  cmd->add_option("--format", args->format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  AddReadOptionFlags(*cmd, &args->read);
  return [args, &global] { return RunInspect(*args, global); };
}

}  // namespace reprod::reprodctl
