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
// declared uncompressed size is checked against ReadOptions::max_alloc_bytes
// and against the largest ratio deflate can reach before anything is
// allocated, and the bytes read (with their CRC-32) must match it.
//
// Errors name the file and the member ("a.npz:x.npy: ..."): InvalidArgument
// (not a zip, inconsistent archive, unsupported member), DataLoss (truncated
// or CRC mismatch), ResourceExhausted (sizes over ReadOptions), plus those of
// formats/npy.h for the members.
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
