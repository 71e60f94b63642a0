// File: common/tensor.h
//
// Shape, TensorView (non-owning) and Tensor (owning or borrowing) — the value
// types every folder passes around.
//
// Layout contract: a tensor's bytes are C-order (row-major), tightly packed,
// little-endian (the host order of every machine we support). Readers of
// Fortran-order or big-endian files convert into this layout; everything
// downstream may rely on it. The bytes need NOT be aligned to the element
// size: readers borrow array payloads from memory-mapped files at whatever
// offset the file puts them (a pickle's BINBYTES, an npz member), so every
// consumer loads elements through memcpy (compilers turn that into plain
// unaligned loads).
//
// Thread-safety: TensorView and Tensor are values; concurrent reads are safe.
// A Tensor's bytes are immutable once it is shared.
#ifndef REPROD_COMMON_TENSOR_H_
#define REPROD_COMMON_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace reprod {

// reprod::Shape — dimensions, outermost first. Empty = 0-d (one element).
using Shape = absl::InlinedVector<int64_t, 6>;

// Number of elements of `shape`; InvalidArgument for a negative dimension or
// an element/byte count that overflows int64 (checked before any allocation).
absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape, DType dtype);

// Same for elements of `itemsize` bytes (formats whose element types have no
// DType, e.g. numpy object arrays); itemsize <= 0 skips the byte-count check.
absl::StatusOr<int64_t> CheckedNumElements(const Shape& shape, int64_t itemsize);

// Unchecked product of dimensions (shape must already be validated).
int64_t NumElements(const Shape& shape);

// "(3, 4)" / "()" / "(5,)": numpy's tuple notation, used in messages.
std::string ShapeToString(const Shape& shape);

// reprod::TensorView — a borrowed, read-only view of tensor bytes. The caller
// keeps the bytes alive for as long as the view is used.
struct TensorView {
  DType dtype = DType::kFloat32;
  Shape shape;
  const void* data = nullptr;  // C-order, packed, little-endian

  int64_t num_elements() const { return NumElements(shape); }
  size_t num_bytes() const {
    return static_cast<size_t>(num_elements()) * DTypeSize(dtype);
  }
};

// reprod::Tensor — a tensor that keeps its bytes alive: either a buffer it
// allocated, or bytes owned by another object (a memory-mapped file) that it
// holds a reference to. Copies share the bytes.
class Tensor {
 public:
  Tensor() = default;

  // Allocates an uninitialised buffer for `shape`. InvalidArgument on bad or
  // overflowing shapes; ResourceExhausted when the allocation fails.
  static absl::StatusOr<Tensor> Allocate(DType dtype, Shape shape);

  // Borrows `data` (already validated to hold the shape's bytes), keeping
  // `owner` alive. No copy.
  static Tensor Borrow(DType dtype, Shape shape, const void* data,
                       std::shared_ptr<const void> owner);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t num_elements() const { return NumElements(shape_); }
  size_t num_bytes() const {
    return static_cast<size_t>(num_elements()) * DTypeSize(dtype_);
  }
  const void* data() const { return data_; }
  // Writable bytes: only for tensors made by Allocate (nullptr otherwise).
  void* mutable_data() { return writable_ ? const_cast<void*>(data_) : nullptr; }

  TensorView view() const { return TensorView{dtype_, shape_, data_}; }

 private:
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  const void* data_ = nullptr;
  bool writable_ = false;
  std::shared_ptr<const void> owner_;
};

// reprod::NamedTensor — a tensor with its key (a `/`-path, "a/b/c").
struct NamedTensor {
  std::string key;
  Tensor tensor;
};

}  // namespace reprod

#endif  // REPROD_COMMON_TENSOR_H_
