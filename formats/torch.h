// File: formats/torch.h
//
// PyTorch's torch.save files (.pt, .pth, .bin checkpoints): state_dicts,
// (nested) dicts and lists of tensors, bare tensors.
//
//   absl::StatusOr<TensorFile> f = ReadTorch(file);  // file: MappedFile
//
// Two containers are read:
//  * the zip archive torch.save writes since 1.6: "<archive>/data.pkl" (the
//    pickle), "<archive>/data/<key>" (one member per storage), and
//    "<archive>/version" and, since 2.1, "<archive>/byteorder" ("little" or
//    "big"). It is opened with the zip reader shared with .npz
//    (formats/internal/zip_archive.h: declared sizes checked before
//    allocating, CRC-32 verified).
//  * the legacy stream (_use_new_zipfile_serialization=False): pickles of the
//    magic number, the protocol version (1001) and the system info, the
//    object pickle, the list of storage keys, then each storage's raw bytes
//    after its 8-byte little-endian element count. Files written on
//    big-endian machines are refused.
// The pickle is interpreted by the restricted unpickler (formats/pickle.h)
// extended with the globals torch uses for tensors
// (formats/internal/torch_pickle.h): torch._utils._rebuild_tensor_v2,
// _rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter(_with_state) (a
// Parameter stands for its tensor), the typed storage classes
// torch.FloatStorage ... torch.BoolStorage, torch.UntypedStorage and the
// torch dtypes, on top of the numpy/builtins allowlist (incl.
// collections.OrderedDict). Any other global is refused with PermissionDenied
// naming it; nothing is ever executed. Persistent ids must be
// ('storage', storage_type, key, location, numel) and name a storage present
// in the file with exactly numel elements: a storage member's zip size must
// be numel times itemsize before it is decompressed (and decompression stops
// one byte past it), and members over ReadOptions::compression_ratio_free_bytes
// may expand at most ReadOptions::max_compression_ratio times. Shapes have at
// most 64 dimensions.
//
// Tensors: sizes, strides and storage offset are validated against the
// storage before any byte is read (overflow-checked). A contiguous view
// borrows the storage bytes: the decompressed member buffer (zip; one copy,
// none when the member is shared by several tensors) or the mapped file
// itself (legacy). Any other view (transposed, sliced with a stride, ...) is
// copied into a new C-order buffer. Parameters, the CPU and CUDA location
// tag and requires_grad are ignored. Tensors of dtypes reprod lacks
// (complex, and uint16/32/64 where common/dtype.h has no such type) are
// listed in TensorFile::skipped.
//
// Flattening follows formats/pickle.h: a state_dict's keys become tensor
// keys ("layer.weight"), nested dicts "a/b", list items "a/0"; a bare tensor
// has the key "output"; state_dict metadata and other non-tensor values are
// listed in TensorFile::skipped.
//
// Errors name the file (and the archive member, "m.pt:m/data.pkl: ..."):
// PermissionDenied (refused global), InvalidArgument (malformed pickle,
// unknown persistent id, storage missing or of the wrong size, view past
// the end of its storage), DataLoss (truncated, CRC mismatch, member larger
// than declared), ResourceExhausted (ReadOptions).
//
// Thread-safety: reentrant.
#ifndef REPROD_FORMATS_TORCH_H_
#define REPROD_FORMATS_TORCH_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "formats/tensor_file.h"

namespace reprod::formats {

// Reads the torch.save file held by `file` (zip archive or legacy stream).
// Returned tensors may borrow from `file` (legacy) or from decompressed
// member buffers (zip), which they keep alive.
absl::StatusOr<TensorFile> ReadTorch(std::shared_ptr<const MappedFile> file,
                                     const ReadOptions& options = {});

// True when `bytes` is a torch.save zip archive: a zip with a member
// "<archive>/data.pkl". Reads only the zip's central directory.
bool IsTorchZip(std::string_view bytes);

// True when `bytes` starts with the legacy torch.save magic-number pickle.
bool IsTorchLegacy(std::string_view bytes);

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_TORCH_H_
