#include "client/cpp/file_tensor_source.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "formats/npy.h"
#include "formats/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::client {
namespace {

using ::reprod::testing::IsOk;
using ::reprod::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

class FileTensorSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("file_tensor_source_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Tensor Floats(std::vector<float> values) {
    auto t = Tensor::Allocate(DType::kFloat32, {static_cast<int64_t>(values.size())});
    EXPECT_TRUE(t.ok());
    std::memcpy(t->mutable_data(), values.data(), values.size() * sizeof(float));
    return *t;
  }

  std::string WriteNpy(const std::string& name, const Tensor& t) {
    const std::string path = (dir_ / name).string();
    EXPECT_THAT(formats::WriteNpy(path, t.view()), IsOk());
    return path;
  }

  std::string WriteSafetensors(const std::string& name, const std::vector<NamedTensor>& tensors) {
    const std::string path = (dir_ / name).string();
    auto bytes = formats::EncodeSafetensors(tensors);
    EXPECT_THAT(bytes, IsOk());
    std::ofstream(path, std::ios::binary) << *bytes;
    return path;
  }

  // Every item the source yields.
  static std::vector<PushItem> Drain(FileTensorSource& source) {
    std::vector<PushItem> items;
    for (;;) {
      auto next = source.Next();
      EXPECT_THAT(next, IsOk());
      if (!next.ok() || !next->has_value()) return items;
      items.push_back(**next);
    }
  }

  fs::path dir_;
};

TEST_F(FileTensorSourceTest, CheckpointFromFileNameAndBareArrayKey) {
  const std::string a = WriteNpy("forward_paddle.npy", Floats({1, 2, 3}));
  const std::string b = WriteNpy("loss_paddle.npy", Floats({0.5}));
  ASSERT_OK_AND_ASSIGN(auto source, FileTensorSource::Open({a, b}, {}));
  EXPECT_GT(source->TotalBytes(), 0u);
  std::vector<PushItem> items = Drain(*source);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].checkpoint, "forward");
  EXPECT_EQ(items[0].key, "output");
  EXPECT_FALSE(items[0].step.has_value());
  EXPECT_EQ(items[0].tensor.num_bytes(), 12u);
  EXPECT_EQ(items[1].checkpoint, "loss");
  // Once every file is open the estimate is exact.
  EXPECT_EQ(source->TotalBytes(), 16u);
  EXPECT_EQ(source->files_opened(), 2u);
}

TEST_F(FileTensorSourceTest, CheckpointOverrideAndStep) {
  const std::string a =
      WriteSafetensors("w.safetensors", {{"enc.w", Floats({1, 2})}, {"enc.b", Floats({3})}});
  FileTensorSource::Options options;
  options.checkpoint = "bp_align";
  options.step = 3;
  ASSERT_OK_AND_ASSIGN(auto source, FileTensorSource::Open({a}, options));
  std::vector<PushItem> items = Drain(*source);
  ASSERT_EQ(items.size(), 2u);
  std::vector<std::string> keys;
  for (const PushItem& i : items) {
    EXPECT_EQ(i.checkpoint, "bp_align");
    EXPECT_EQ(i.step, 3);
    keys.push_back(i.key);
  }
  EXPECT_THAT(keys, ::testing::UnorderedElementsAre("enc.w", "enc.b"));
}

TEST_F(FileTensorSourceTest, MissingFileFailsAtOpenNamingIt) {
  const std::string a = WriteNpy("forward_paddle.npy", Floats({1}));
  EXPECT_THAT(FileTensorSource::Open({a, (dir_ / "nope.npy").string()}, {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.npy")));
  EXPECT_THAT(FileTensorSource::Open({}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no files")));
  EXPECT_THAT(FileTensorSource::Open({dir_.string()}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
}

TEST_F(FileTensorSourceTest, BadCheckpointNameFromFileNameSuggestsTheFlag) {
  const std::string a = WriteNpy("bad name_paddle.npy", Floats({1}));
  EXPECT_THAT(FileTensorSource::Open({a}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--checkpoint")));
  FileTensorSource::Options options;
  options.checkpoint = "ok";
  EXPECT_THAT(FileTensorSource::Open({a}, options), IsOk());
  options.checkpoint = "not ok";
  EXPECT_THAT(FileTensorSource::Open({a}, options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_F(FileTensorSourceTest, BadKeyFailsBeforeAnyTensorOfTheFile) {
  const std::string a =
      WriteSafetensors("w.safetensors", {{"good", Floats({1})}, {"bad key", Floats({2})}});
  ASSERT_OK_AND_ASSIGN(auto source, FileTensorSource::Open({a}, {}));
  EXPECT_THAT(source->Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("w.safetensors"), HasSubstr("bad key"))));
}

TEST_F(FileTensorSourceTest, SameAddressFromTwoFilesIsRefused) {
  const std::string a = WriteNpy("forward_torch.npy", Floats({1}));
  const std::string b = WriteNpy("forward_paddle.npy", Floats({1}));
  ASSERT_OK_AND_ASSIGN(auto source, FileTensorSource::Open({a, b}, {}));
  auto first = source->Next();
  ASSERT_THAT(first, IsOk());
  ASSERT_TRUE(first->has_value());
  EXPECT_THAT(source->Next(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("forward_paddle.npy"),
                                        HasSubstr("forward/output"), HasSubstr("own run"))));
}

TEST_F(FileTensorSourceTest, UnreadableFileErrorNamesIt) {
  const std::string path = (dir_ / "junk_paddle.npy").string();
  std::ofstream(path) << "not a tensor file";
  ASSERT_OK_AND_ASSIGN(auto source, FileTensorSource::Open({path}, {}));
  EXPECT_THAT(source->Next(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("junk_paddle.npy")));
}

TEST_F(FileTensorSourceTest, NestedDictFlattensAndSkippedValuesBecomeNotes) {
  ASSERT_OK_AND_ASSIGN(
      auto source,
      FileTensorSource::Open({std::string(REPROD_FORMATS_TESTDATA) + "/np2_save_nested.npy"}, {}));
  std::vector<PushItem> items = Drain(*source);
  std::vector<std::string> keys;
  for (const PushItem& i : items) {
    EXPECT_EQ(i.checkpoint, "np2_save_nested");
    keys.push_back(i.key);
  }
  EXPECT_THAT(keys, ::testing::Contains("model/layer/weight"));
  EXPECT_THAT(keys, ::testing::Contains("od/z"));
  EXPECT_FALSE(source->notes().empty());
}

}  // namespace
}  // namespace reprod::client
