// File: formats/npz.h
//
// numpy's .npz archives (np.savez, np.savez_compressed): a zip of .npy files.
//
//   absl::StatusOr<TensorFile> f = ReadNpz(file);
//
// The archive is opened with libzip directly over the mapped bytes (no temp
// files), with its consistency checks on. Stored and deflated members are
// supported; encrypted members and other compression methods are refused.
// A member "x.npy" becomes the key "x" ("d/x.npy" -> "d/x"); a member holding
// a pickled object array is flattened under its key ("x/a/b"). Members not
// named *.npy, and members of dtypes reprod lacks, are listed in
// TensorFile::skipped; directory entries are ignored. Tensors come in archive
// order.
//
// Memory: each member is decompressed into its own buffer, which its tensors
// share (one copy; no further copy for C-order little-endian members). The
// zip's declared uncompressed size is never trusted alone: the member's npy
// header is decompressed first (at most 4 KiB, or its declared length up to
// 1 MiB), and a numeric member must declare exactly header plus shape times
// itemsize in the zip too, so decompression stops one byte past what the
// header declares. That size is then checked against the largest ratio
// deflate can reach, ReadOptions::max_compression_ratio (members over
// ReadOptions::compression_ratio_free_bytes) and ReadOptions::max_alloc_bytes
// before anything is allocated, and the bytes read (with their CRC-32) must
// match it. Object (pickled) members, whose size no header fixes, get the
// same checks on the zip's size.
//
// Errors name the file and the member ("a.npz:x.npy: ..."): InvalidArgument
// (not a zip, inconsistent archive, unsupported member, zip size disagreeing
// with the npy header), DataLoss (truncated, longer than declared or CRC
// mismatch), ResourceExhausted (sizes or ratio over ReadOptions), plus those
// of formats/npy.h for the members.
//
// Thread-safety: reentrant.
#ifndef REPROD_FORMATS_NPZ_H_
#define REPROD_FORMATS_NPZ_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "formats/tensor_file.h"

namespace reprod::formats {

// Reads the .npz archive held by `file`. Returned tensors own (share) their
// decompressed member buffers; they do not keep `file` alive.
absl::StatusOr<TensorFile> ReadNpz(std::shared_ptr<const MappedFile> file,
                                   const ReadOptions& options = {});

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_NPZ_H_
