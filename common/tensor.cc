#include "common/tensor.h"

#include <limits>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace reprod {

absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape, int64_t itemsize) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension in shape ", ShapeToString(shape)));
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeToString(shape), " overflows int64"));
    }
    n *= d;
  }
  if (itemsize > 0 && n > std::numeric_limits<int64_t>::max() / itemsize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte size of shape ", ShapeToString(shape), " overflows int64"));
  }
  return n;
}

absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape, DType dtype) {
  return CheckedNumElements(shape, static_cast<int64_t>(DTypeSize(dtype)));
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

absl::StatusOr<Tensor> Tensor::Allocate(DType dtype, Shape shape) {
  auto n = CheckedNumElements(shape, dtype);
  if (!n.ok()) return n.status();
  const size_t bytes = static_cast<size_t>(*n) * DTypeSize(dtype);
  // operator new[] aligns to __STDCPP_DEFAULT_NEW_ALIGNMENT__ (16): enough for
  // every dtype and for 16-byte vector loads.
  std::shared_ptr<std::byte[]> buf(new (std::nothrow) std::byte[bytes == 0 ? 1 : bytes]);
  if (!buf) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes for tensor of shape ",
                     ShapeToString(shape)));
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = buf.get();
  t.writable_ = true;
  t.owner_ = std::shared_ptr<const void>(buf, buf.get());
  return t;
}

Tensor Tensor::Borrow(DType dtype, Shape shape, const void* data,
                      std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.writable_ = false;
  t.owner_ = std::move(owner);
  return t;
}

}  // namespace reprod
