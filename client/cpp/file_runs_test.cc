#include "client/cpp/file_runs.h"

#include "gtest/gtest.h"

namespace reprod::client {
namespace {

TEST(CheckpointNameFromPath, StripsDirectoryExtensionAndFrameworkSuffix) {
  EXPECT_EQ(CheckpointNameFromPath("log_reprod/forward_torch.npy"), "forward");
  EXPECT_EQ(CheckpointNameFromPath("forward_paddle.npy"), "forward");
  EXPECT_EQ(CheckpointNameFromPath("/a/b/train_align_benchmark.npy"), "train_align");
  EXPECT_EQ(CheckpointNameFromPath("bp_align_ref.npz"), "bp_align");
  EXPECT_EQ(CheckpointNameFromPath("model.pdparams"), "model");
  EXPECT_EQ(CheckpointNameFromPath("weights.safetensors"), "weights");
  // Only one suffix, and never the whole name.
  EXPECT_EQ(CheckpointNameFromPath("torch.npy"), "torch");
  EXPECT_EQ(CheckpointNameFromPath("x_torch_paddle.npy"), "x_torch");
}

TEST(FileStem, DropsLastExtensionOnly) {
  EXPECT_EQ(FileStem("dir/a.b.npy"), "a.b");
  EXPECT_EQ(FileStem(".hidden"), ".hidden");
  EXPECT_EQ(FileStem("noext"), "noext");
}

}  // namespace
}  // namespace reprod::client
