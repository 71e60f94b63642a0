#include "formats/tensor_file.h"

#include <string>

#include "common/mapped_file.h"
#include "formats/internal/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reprod::formats {
namespace {

using ::reprod::formats::testing::TestdataPath;
using ::reprod::testing::StatusIs;
using ::testing::HasSubstr;

TEST(TensorFile, DetectsEveryFormatByContent) {
  struct Case {
    const char* file;
    FileFormat format;
  };
  for (const Case& c : {Case{"np2_save_dict.npy", FileFormat::kNpyPickledDict},
                        Case{"savez.npz", FileFormat::kNpz},
                        Case{"np2_dtypes_p4.pkl", FileFormat::kPickle},
                        Case{"paddle_state_p2.pdparams", FileFormat::kPickle},
                        Case{"dtypes.safetensors", FileFormat::kSafetensors}}) {
    ASSERT_OK_AND_ASSIGN(TensorFile f, ReadTensorFile(TestdataPath(c.file)));
    EXPECT_EQ(f.format, c.format) << c.file;
    EXPECT_EQ(f.path, TestdataPath(c.file));
    EXPECT_FALSE(f.tensors.empty());
  }
  EXPECT_STREQ(FileFormatName(FileFormat::kSafetensors), "safetensors");
}

TEST(TensorFile, UnknownFormatNamesFileAndFirstBytes) {
  EXPECT_THAT(ReadTensorBytes(MappedFile::FromString("GIF89a....", "/tmp/cat.gif")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("/tmp/cat.gif"), HasSubstr("47 49 46 38 39 61 2e 2e"))));
  EXPECT_THAT(ReadTensorBytes(MappedFile::FromString("", "/tmp/empty.npy")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/tmp/empty.npy: empty")));
  // A protocol-0 pickle is not sniffed as a pickle.
  EXPECT_THAT(ReadTensorBytes(MappedFile::FromString("(dp0\n.", "p0.pkl")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unrecognised")));
}

TEST(TensorFile, MissingFileIsNotFound) {
  EXPECT_THAT(ReadTensorFile("/nonexistent/forward_paddle.npy"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/forward_paddle.npy")));
}

}  // namespace
}  // namespace reprod::formats
