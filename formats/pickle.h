// File: formats/pickle.h
//
// Raw pickles of tensor dicts: paddle.save / .pdparams / .pdopt files and
// pickle.dump of (nested) dicts of numpy arrays. The same restricted reader
// handles the pickles inside object-dtype .npy files (formats/npy.h).
//
//   absl::StatusOr<TensorFile> f = ReadPickle(file);  // file: MappedFile
//
// The reader is an interpreter written for this project, never Python's: it
// understands protocols 0-5 (PROTO, FRAME, the container, int, float, str,
// bytes, bytearray and memo opcodes, GLOBAL / STACK_GLOBAL, REDUCE, BUILD,
// NEWOBJ, in-band protocol-5 buffers) and models a fixed allowlist of
// callables as pure functions:
//   numpy.core.multiarray._reconstruct, numpy._core.multiarray._reconstruct,
//   numpy.ndarray, numpy.dtype, numpy.core.multiarray.scalar,
//   numpy._core.multiarray.scalar, numpy.core.numeric._frombuffer,
//   numpy._core.numeric._frombuffer, _codecs.encode (latin-1 / utf-8 / ascii),
//   collections.OrderedDict, and builtins (or __builtin__) tuple, list, bytes,
//   bytearray.
// Any other global is refused with PermissionDenied naming it and its offset
// ("x.pdparams: refused pickle global 'os.system' at offset 23 ..."). Nothing
// is ever executed. Out-of-band buffers (NEXT_BUFFER), persistent ids, the
// extension registry, INST/OBJ and protocol-0 STRING/UNICODE are refused with
// InvalidArgument. torch.save files, whose pickles name storages through
// persistent ids, are read by formats/torch.h, which extends this
// interpreter with torch's tensor globals (formats/internal/torch_pickle.h).
// The implementation: formats/internal/unpickler.h (opcodes),
// pickle_object.h (object model and allowlist), pickle_callables.cc (the
// modelled callables) and flattener.h (the flattening below).
//
// Flattening: nested dicts become "a/b/c" keys, list and tuple items "a/0",
// "a/1"; numpy arrays and scalars become tensors; Python int / float / bool
// become 0-d int64 / float64 / bool tensors. A paddle Tensor (paddle.save
// pickles it as builtins.tuple((name, ndarray))) stands for its array; a 0-d
// object array for its element, an n-d one for its items by flat index. A
// bare array at the top level has the key "output". Int dict keys become
// decimal strings; a key repeated in one dict keeps its first position and
// last value, as in Python. paddle's protocol-2/3 big-parameter slices
// ("k@@.0", "k@@.1", ... with the "UnpackBigParamInfor@@" table) are joined
// back into "k". Strings, None, bytes, empty containers, Python ints outside
// int64, arrays of dtypes reprod lacks (complex, strings, datetimes,
// structured) and paddle's "StructuredToParameterName@@" /
// "UnpackBigParamInfor@@" tables go to TensorFile::skipped as "key: reason".
// When two leaves flatten to the same key, the first is kept and the second
// is listed in `skipped`.
//
// Zero copy: array data held in BINBYTES / BINBYTES8 / BYTEARRAY8 (protocol
// 3+) is borrowed from the mapped file when C-order, little-endian and
// aligned to the element size; otherwise it is copied (protocol 2 stores
// bytes as latin-1 text, which is always decoded into a new buffer).
//
// Limits: every length is checked against the remaining input before use;
// the stack, memo, open MARKs, object count, container items and nesting
// depth are bounded (internal/unpickler.h, PickleLimits; the first four by
// input bytes / 4 + 65536 as well as hard caps), shapes have at most 64
// dimensions, and copies are
// bounded by 64 times the input size (plus 1 MiB), so hostile input costs at
// most a bounded multiple of its size in memory and time.
//
// Errors name the file and the offset: PermissionDenied (refused global),
// DataLoss (truncated), InvalidArgument (malformed or unsupported),
// ResourceExhausted (limits, ReadOptions).
//
// Thread-safety: all functions are reentrant.
#ifndef REPROD_FORMATS_PICKLE_H_
#define REPROD_FORMATS_PICKLE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "formats/tensor_file.h"

namespace reprod::formats {

// Reads `file`, which holds one pickle (trailing bytes after STOP are
// ignored). Returned tensors may borrow from `file`, which they keep alive.
absl::StatusOr<TensorFile> ReadPickle(std::shared_ptr<const MappedFile> file,
                                      const ReadOptions& options = {});

}  // namespace reprod::formats

#endif  // REPROD_FORMATS_PICKLE_H_
