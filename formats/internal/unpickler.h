// File: formats/internal/unpickler.h
//
// The restricted unpickler behind formats/pickle.h (internal API).
//
// Unpickler interprets a pickle (protocols 0-5, the opcodes numpy, paddle.save
// and torch.save emit) without executing anything: GLOBAL / STACK_GLOBAL
// resolve only an allowlist of callables (numpy array/dtype/scalar
// reconstruction, _codecs.encode for latin-1, collections.OrderedDict and the
// builtins tuple/list/bytes/bytearray; formats/internal/pickle_object.h), each
// modelled by a pure C++ function, plus those of an optional PickleExtension
// (torch tensors, formats/internal/torch_pickle.h). Every other global is
// refused with PermissionDenied naming it. The resulting object graph is
// flattened into named tensors by formats/internal/flattener.h (see pickle.h
// for the rules); UnpickleAndFlatten does both.
//
// Layout of the implementation: unpickler.cc holds the opcode loop, which
// dispatches each opcode to the member function of its group (stack, numbers,
// strings, containers, memo, objects); pickle_callables.cc holds the models
// of the allowlisted callables and of REDUCE / NEWOBJ / BUILD.
//
// Thread-safety: an Unpickler is used by one thread; functions are reentrant.
#ifndef REPROD_FORMATS_INTERNAL_UNPICKLER_H_
#define REPROD_FORMATS_INTERNAL_UNPICKLER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/internal/array.h"
#include "formats/internal/pickle_object.h"
#include "formats/tensor_file.h"

namespace reprod::formats::internal {

// Bounds on the interpreter, all checked before the memory is used. The
// stack, MARK, object and memo counts are hard caps; each is further bounded
// by the input: at most input_bytes / kInputBytesPerEntry + kEntrySlack (an
// opcode is at least one byte, so without this a 4 MB pickle could build
// 4 M objects of ~160 B each). Past a bound, ResourceExhausted names the
// input, the bound and the offset.
struct PickleLimits {
  static constexpr size_t kInputBytesPerEntry = 4;
  static constexpr size_t kEntrySlack = size_t{1} << 16;
  size_t max_stack = size_t{1} << 21;          // stack entries
  size_t max_marks = size_t{1} << 20;          // open MARKs
  size_t max_objects = size_t{1} << 23;        // objects created (~160 B each)
  size_t max_memo = size_t{1} << 22;           // memo entries
  int max_nesting = 64;                        // container depth when flattening
  uint64_t max_key_bytes = uint64_t{1} << 28;  // sum of flattened key lengths
};

class Unpickler;

// The hooks through which a reader teaches the interpreter the globals and
// persistent ids of its own format. The extension's objects are
// Kind::kExternal; it makes them with Unpickler::New and reports malformed
// input with Unpickler::Invalid (which names the input and the offset).
// Nothing an extension models may execute anything either.
class PickleExtension {
 public:
  virtual ~PickleExtension() = default;

  // The id (>= 0) of a global this extension models, or nullopt. Consulted
  // before the base allowlist.
  virtual std::optional<int64_t> FindGlobal(std::string_view module,
                                            std::string_view name) const = 0;
  // What the base allowlist and the extension accept together, for the
  // message refusing any other global.
  virtual std::string_view AllowedSummary() const = 0;
  // REDUCE of the extension's global `id` with `args`.
  virtual absl::StatusOr<Obj*> Call(Unpickler& u, int64_t id, const std::vector<Obj*>& args) = 0;
  // BINPERSID: the object persistent id `pid` stands for.
  virtual absl::StatusOr<Obj*> PersistentLoad(Unpickler& u, Obj* pid) = 0;
  // Flattening a kExternal object: its tensor, or nullopt with *why set (it
  // is then listed in TensorFile::skipped). `what` names the file and key.
  virtual absl::StatusOr<std::optional<Tensor>> ToTensor(const Obj& o, const std::string& what,
                                                         ReadBudget* budget, std::string* why) = 0;
};

class Unpickler {
 public:
  // `input` and `extension` (may be null) must outlive the Unpickler.
  Unpickler(const ByteSource& input, ReadBudget* budget, const PickleLimits& limits,
            PickleExtension* extension = nullptr);

  // Interprets opcodes up to and including STOP; returns the object STOP pops.
  absl::StatusOr<Obj*> Run();
  // Bytes of the input consumed by Run (the pickle ends there).
  size_t end() const { return pos_; }

  const ByteSource& input() const { return in_; }
  ReadBudget* budget() const { return budget_; }
  PickleExtension* extension() const { return extension_; }
  size_t num_objects() const { return arena_.size(); }
  // Owner for tensors borrowing from `o` (a kBytes).
  std::shared_ptr<const void> OwnerOf(const Obj* o) const {
    if (o->owned) return std::shared_ptr<const void>(o->owned, o->owned->data());
    return in_.owner;
  }

  // For callables and extensions: a new object (counted against
  // PickleLimits::max_objects), the items budget of containers, and errors
  // naming the input and the offset of the current opcode.
  absl::StatusOr<Obj*> New(Kind kind);
  absl::Status ChargeItems(uint64_t n);
  uint64_t Off() const { return in_.base_offset + op_pos_; }
  absl::Status Invalid(std::string_view what) const;
  absl::Status Truncated(std::string_view what) const;
  absl::Status Exhausted(std::string_view what) const;
  // "N (bound for a B-byte pickle: ...)", for Exhausted messages.
  std::string LimitText(size_t limit) const;

 private:
  // Input.
  absl::StatusOr<const char*> Take(uint64_t len, std::string_view what);
  absl::StatusOr<std::string_view> TakeLine(std::string_view what);
  // A memo index written as a decimal line (protocol-0 PUT and GET).
  absl::StatusOr<uint64_t> TakeMemoIndexLine(std::string_view op);

  // Stack.
  size_t Fence() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::Status Push(Obj* o);
  absl::StatusOr<Obj*> Pop();
  absl::StatusOr<Obj*> Top();
  // Pops everything above the innermost MARK, and the MARK.
  absl::StatusOr<std::vector<Obj*>> PopMark();

  // Memo.
  absl::Status Memoize(uint64_t index);
  absl::Status Get(uint64_t index);

  // The opcode groups: each interprets the opcodes of one job (the argument
  // is the opcode just read).
  using OpHandler = absl::Status (Unpickler::*)(unsigned char op);
  static const OpHandler* OpTable();
  absl::Status OpStack(unsigned char op);      // PROTO FRAME MARK POP POP_MARK DUP
  absl::Status OpNumber(unsigned char op);     // None, bools, ints, floats
  absl::Status OpText(unsigned char op);       // str, bytes, buffers
  absl::Status OpContainer(unsigned char op);  // tuple, list, dict, set builders
  absl::Status OpMemo(unsigned char op);       // PUT / GET in all spellings
  absl::Status OpObject(unsigned char op);     // globals, REDUCE, NEWOBJ, BUILD, PERSID
  absl::Status OpRefused(unsigned char op);    // everything not supported

  // Opcode helpers.
  absl::Status PushNew(Kind kind);
  absl::Status PushInt(int64_t v);
  absl::Status PushBool(bool v);
  absl::Status PushFloat(double v);
  absl::Status PushIntLine(unsigned char op);  // INT / LONG text forms
  absl::Status PushLong(const char* p, uint64_t len);
  absl::Status PushUnicode(uint64_t len);
  absl::Status PushBytes(uint64_t len);
  absl::Status PushTuple(std::vector<Obj*> items);
  absl::Status PushGlobal(std::string_view module, std::string_view name);
  // The callable (and extension id) for `module.name`; PermissionDenied
  // naming it when neither the extension nor the allowlist has it.
  absl::Status ResolveGlobal(std::string_view module, std::string_view name, Callable* out,
                             int64_t* extension_id) const;
  absl::Status PersistentLoad(Obj* pid);

  // REDUCE / NEWOBJ / BUILD and the modelled callables
  // (pickle_callables.cc).
  absl::Status Reduce(Obj* callable, Obj* args);
  absl::Status NewObj(Obj* cls, Obj* args);
  absl::Status Build(Obj* target, Obj* state);
  absl::Status SetItems(Obj* dict, const std::vector<Obj*>& kv);
  absl::Status Append(Obj* list, const std::vector<Obj*>& items);
  absl::StatusOr<Obj*> CallReconstruct(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallDType(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallScalar(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallFromBuffer(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallCodecsEncode(const std::vector<Obj*>& args);
  absl::StatusOr<Obj*> CallContainer(Kind kind, const std::vector<Obj*>& args, const char* name);
  absl::StatusOr<Obj*> CallBytes(const std::vector<Obj*>& args, const char* name);
  absl::Status SetArrayState(NpArray* array, Obj* state);
  absl::Status SetDTypeState(NpDType* dtype, Obj* state);
  absl::StatusOr<Shape> ToShape(Obj* o, std::string_view what);
  absl::Status CheckNumericData(const NpArray& a, size_t size);

  const ByteSource& in_;
  const char* p_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  ReadBudget* budget_;
  PickleLimits limits_;
  PickleExtension* extension_;
  uint64_t items_budget_;
  std::deque<Obj> arena_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, Obj*> memo_;
};

// Unpickles `input` and appends its leaves to `out->tensors` / `out->skipped`
// with keys under `key_prefix` ("" = top level; a bare array at the top level
// gets the key "output"). The caller has called budget->AllowCopies for the
// bytes containing the pickle.
//
// Errors: PermissionDenied (a global outside the allowlist), DataLoss
// (truncated), InvalidArgument (malformed or unsupported opcodes, out-of-band
// buffers, persistent ids), ResourceExhausted (limits or budget).
absl::Status UnpickleAndFlatten(const ByteSource& input, const std::string& key_prefix,
                                ReadBudget* budget, TensorFile* out,
                                const PickleLimits& limits = {});

}  // namespace reprod::formats::internal

#endif  // REPROD_FORMATS_INTERNAL_UNPICKLER_H_
