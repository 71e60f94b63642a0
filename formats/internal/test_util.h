// File: formats/internal/test_util.h
//
// Test-only helpers for formats/*_test.cc: fixture paths, tensor lookups and
// value extraction, MakeZip for archives written by libzip, and PickleWriter
// for hand-written pickle bytes.
#ifndef REPROD_FORMATS_INTERNAL_TEST_UTIL_H_
#define REPROD_FORMATS_INTERNAL_TEST_UTIL_H_

#include <zip.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/mapped_file.h"
#include "common/tensor.h"
#include "formats/tensor_file.h"
#include "gtest/gtest.h"

namespace reprod::formats::testing {

// A zip archive holding `members` (name, bytes) in order, written by libzip.
inline std::string MakeZip(const std::vector<std::pair<std::string, std::string>>& members,
                           bool deflate = false) {
  const std::string path = ::testing::TempDir() + "/formats_test_" +
                           std::to_string(reinterpret_cast<uintptr_t>(&members)) + ".zip";
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  EXPECT_NE(z, nullptr) << err;
  if (z == nullptr) return "";
  for (const auto& [name, data] : members) {
    zip_source_t* src = zip_source_buffer(z, data.data(), data.size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE);
    EXPECT_GE(idx, 0) << name;
    zip_set_file_compression(z, static_cast<zip_uint64_t>(idx),
                             deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
  }
  EXPECT_EQ(zip_close(z), 0);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path.c_str());
  return bytes;
}

inline std::string TestdataPath(const std::string& name) {
  return std::string(REPROD_FORMATS_TESTDATA) + "/" + name;
}

// The tensor named `key`, or nullptr.
inline const Tensor* Find(const TensorFile& f, const std::string& key) {
  for (const NamedTensor& t : f.tensors) {
    if (t.key == key) return &t.tensor;
  }
  return nullptr;
}

inline std::vector<std::string> Keys(const TensorFile& f) {
  std::vector<std::string> keys;
  for (const NamedTensor& t : f.tensors) keys.push_back(t.key);
  return keys;
}

// The elements of `t` (which must have dtype size sizeof(T)) as T.
template <typename T>
std::vector<T> Values(const Tensor& t) {
  EXPECT_EQ(DTypeSize(t.dtype()), sizeof(T));
  std::vector<T> v(static_cast<size_t>(t.num_elements()));
  if (!v.empty()) std::memcpy(v.data(), t.data(), v.size() * sizeof(T));
  return v;
}

inline bool PointsInto(const void* p, const MappedFile& file) {
  const auto* b = static_cast<const std::byte*>(p);
  return b >= file.data() && b < file.data() + file.size();
}

// Builds pickle bytes opcode by opcode.
class PickleWriter {
 public:
  PickleWriter& Raw(std::string_view bytes) {
    out_.append(bytes);
    return *this;
  }
  PickleWriter& Op(char op) {
    out_.push_back(op);
    return *this;
  }
  PickleWriter& Proto(int p) { return Op('\x80').Op(static_cast<char>(p)); }
  PickleWriter& U32(uint32_t v) {
    for (int k = 0; k < 4; ++k) out_.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
    return *this;
  }
  PickleWriter& U64(uint64_t v) {
    for (int k = 0; k < 8; ++k) out_.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
    return *this;
  }
  // SHORT_BINUNICODE / BINUNICODE.
  PickleWriter& Str(std::string_view s) {
    if (s.size() < 256) {
      Op('\x8c').Op(static_cast<char>(s.size()));
    } else {
      Op('X').U32(static_cast<uint32_t>(s.size()));
    }
    return Raw(s);
  }
  // SHORT_BINBYTES / BINBYTES.
  PickleWriter& Bytes(std::string_view s) {
    if (s.size() < 256) {
      Op('C').Op(static_cast<char>(s.size()));
    } else {
      Op('B').U32(static_cast<uint32_t>(s.size()));
    }
    return Raw(s);
  }
  PickleWriter& Int(int32_t v) { return Op('J').U32(static_cast<uint32_t>(v)); }
  // GLOBAL "module\nname\n" (protocol 0-3 spelling).
  PickleWriter& Global(std::string_view module, std::string_view name) {
    return Op('c').Raw(module).Op('\n').Raw(name).Op('\n');
  }
  // STACK_GLOBAL (protocol 4+ spelling).
  PickleWriter& StackGlobal(std::string_view module, std::string_view name) {
    return Str(module).Str(name).Op('\x93');
  }
  // numpy dtype(spec) with BUILD state (3, order, None, None, None, -1, -1, 0).
  PickleWriter& DType(std::string_view spec, std::string_view order) {
    Global("numpy", "dtype").Str(spec).Op('\x89').Op('\x88').Op('\x87').Op('R');
    Op('(').Int(3).Str(order).Op('N').Op('N').Op('N').Int(-1).Int(-1).Int(0).Op('t');
    return Op('b');
  }
  // numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + BUILD state
  // (1, shape, dtype, fortran, data-as-BINBYTES8).
  PickleWriter& Array(const std::vector<int64_t>& shape, std::string_view spec,
                      std::string_view order, bool fortran, std::string_view data) {
    Global("numpy.core.multiarray", "_reconstruct").Global("numpy", "ndarray");
    Int(0).Op('\x85').Bytes("b").Op('\x87').Op('R');
    Op('(').Int(1).Op('(');
    for (int64_t d : shape) Op('\x8a').Op(8).U64(static_cast<uint64_t>(d));  // LONG1
    Op('t');
    DType(spec, order);
    Op(fortran ? '\x88' : '\x89');
    Op('\x8e').U64(data.size()).Raw(data);  // BINBYTES8
    return Op('t').Op('b');
  }
  size_t size() const { return out_.size(); }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

}  // namespace reprod::formats::testing

#endif  // REPROD_FORMATS_INTERNAL_TEST_UTIL_H_
