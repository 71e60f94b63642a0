#include "formats/internal/unpickler.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "formats/internal/flattener.h"

namespace reprod::formats::internal {

Unpickler::Unpickler(const ByteSource& input, ReadBudget* budget, const PickleLimits& limits,
                     PickleExtension* extension)
    : in_(input),
      p_(input.bytes.data()),
      n_(input.bytes.size()),
      budget_(budget),
      limits_(limits),
      extension_(extension),
      items_budget_(2 * static_cast<uint64_t>(n_) + (uint64_t{1} << 16)) {
  const size_t scaled = n_ / PickleLimits::kInputBytesPerEntry + PickleLimits::kEntrySlack;
  for (size_t* limit : {&limits_.max_stack, &limits_.max_marks, &limits_.max_objects,
                        &limits_.max_memo}) {
    *limit = std::min(*limit, scaled);
  }
}

std::string Unpickler::LimitText(size_t limit) const {
  return absl::StrCat(limit, " (bound for a ", n_, "-byte pickle: input bytes / ",
                      PickleLimits::kInputBytesPerEntry, " + ", PickleLimits::kEntrySlack,
                      ", hard cap)");
}

// ---------------------------------------------------------------------------
// Messages, input, objects, stack and memo.

absl::Status Unpickler::Invalid(std::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(in_.what, ": ", std::string(what), " at offset ", Off()));
}

absl::Status Unpickler::Truncated(std::string_view what) const {
  return absl::DataLossError(
      absl::StrCat(in_.what, ": truncated pickle: ", std::string(what), " at offset ", Off()));
}

absl::Status Unpickler::Exhausted(std::string_view what) const {
  return absl::ResourceExhaustedError(
      absl::StrCat(in_.what, ": ", std::string(what), " at offset ", Off()));
}

absl::StatusOr<const char*> Unpickler::Take(uint64_t len, std::string_view what) {
  if (len > n_ - pos_) {
    return Truncated(
        absl::StrCat(std::string(what), " needs ", len, " bytes, ", n_ - pos_, " left"));
  }
  const char* p = p_ + pos_;
  pos_ += static_cast<size_t>(len);
  return p;
}

absl::StatusOr<std::string_view> Unpickler::TakeLine(std::string_view what) {
  const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
  if (nl == nullptr) return Truncated(absl::StrCat(std::string(what), " without newline"));
  const size_t len = static_cast<const char*>(nl) - (p_ + pos_);
  std::string_view line(p_ + pos_, len);
  pos_ += len + 1;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

absl::StatusOr<uint64_t> Unpickler::TakeMemoIndexLine(std::string_view op) {
  std::string_view line;
  REPROD_ASSIGN_OR_RETURN(line, TakeLine(op));
  uint64_t idx;
  if (!absl::SimpleAtoi(absl::string_view(line.data(), line.size()), &idx)) {
    return Invalid(absl::StrCat("malformed ", std::string(op)));
  }
  return idx;
}

absl::StatusOr<Obj*> Unpickler::New(Kind kind) {
  if (arena_.size() >= limits_.max_objects) {
    return Exhausted(
        absl::StrCat("pickle creates more objects than ", LimitText(limits_.max_objects)));
  }
  Obj& o = arena_.emplace_back();
  o.kind = kind;
  o.offset = Off();
  return &o;
}

absl::Status Unpickler::ChargeItems(uint64_t n) {
  if (n > items_budget_) {
    return Exhausted("pickle containers hold more items than the input can justify");
  }
  items_budget_ -= n;
  return absl::OkStatus();
}

absl::Status Unpickler::Push(Obj* o) {
  if (stack_.size() >= limits_.max_stack) {
    return Exhausted(absl::StrCat("pickle stack deeper than ", LimitText(limits_.max_stack)));
  }
  stack_.push_back(o);
  return absl::OkStatus();
}

absl::StatusOr<Obj*> Unpickler::Pop() {
  if (stack_.size() <= Fence()) return Invalid("pickle stack underflow");
  Obj* o = stack_.back();
  stack_.pop_back();
  return o;
}

absl::StatusOr<Obj*> Unpickler::Top() {
  if (stack_.size() <= Fence()) return Invalid("pickle stack underflow");
  return stack_.back();
}

absl::StatusOr<std::vector<Obj*>> Unpickler::PopMark() {
  if (marks_.empty()) return Invalid("MARK expected but none is open");
  const size_t m = marks_.back();
  marks_.pop_back();
  std::vector<Obj*> items(stack_.begin() + static_cast<ptrdiff_t>(m), stack_.end());
  stack_.resize(m);
  return items;
}

absl::Status Unpickler::Memoize(uint64_t index) {
  Obj* top;
  REPROD_ASSIGN_OR_RETURN(top, Top());
  auto it = memo_.find(index);
  if (it == memo_.end() && memo_.size() >= limits_.max_memo) {
    return Exhausted(absl::StrCat("pickle memo larger than ", LimitText(limits_.max_memo)));
  }
  memo_[index] = top;
  return absl::OkStatus();
}

absl::Status Unpickler::Get(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) return Invalid(absl::StrCat("memo key ", index, " not found"));
  return Push(it->second);
}

// ---------------------------------------------------------------------------
// Value helpers.

absl::Status Unpickler::PushNew(Kind kind) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(kind));
  return Push(o);
}

absl::Status Unpickler::PushInt(int64_t v) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kInt));
  o->num.i = v;
  return Push(o);
}

absl::Status Unpickler::PushBool(bool v) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBool));
  o->num.b = v;
  return Push(o);
}

absl::Status Unpickler::PushFloat(double v) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kFloat));
  o->num.f = v;
  return Push(o);
}

absl::Status Unpickler::PushIntLine(unsigned char op) {
  std::string_view line;
  REPROD_ASSIGN_OR_RETURN(line, TakeLine("INT/LONG"));
  if (op == 'I' && (line == "00" || line == "01")) return PushBool(line == "01");
  if (op == 'L' && !line.empty() && line.back() == 'L') line.remove_suffix(1);
  int64_t v;
  if (absl::SimpleAtoi(absl::string_view(line.data(), line.size()), &v)) return PushInt(v);
  bool digits = !line.empty();
  for (size_t k = 0; k < line.size(); ++k) {
    const char c = line[k];
    if (!((c >= '0' && c <= '9') || (k == 0 && (c == '-' || c == '+')))) digits = false;
  }
  if (!digits) return Invalid("malformed INT/LONG");
  return PushNew(Kind::kBigInt);
}

absl::Status Unpickler::PushLong(const char* p, uint64_t len) {
  // Little-endian two's complement. Fits int64 when every byte past the
  // eighth repeats the sign.
  if (len == 0) return PushInt(0);
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  const bool negative = (u[len - 1] & 0x80) != 0;
  bool fits = true;
  for (uint64_t k = 8; k < len; ++k) {
    if (u[k] != (negative ? 0xff : 0x00)) fits = false;
  }
  if (len > 8 && fits && ((u[7] & 0x80) != 0) != negative) fits = false;
  if (!fits) return PushNew(Kind::kBigInt);
  uint64_t v = negative ? ~uint64_t{0} : 0;
  for (uint64_t k = 0; k < std::min<uint64_t>(len, 8); ++k) {
    v &= ~(uint64_t{0xff} << (8 * k));
    v |= static_cast<uint64_t>(u[k]) << (8 * k);
  }
  return PushInt(static_cast<int64_t>(v));
}

absl::Status Unpickler::PushUnicode(uint64_t len) {
  const char* p;
  REPROD_ASSIGN_OR_RETURN(p, Take(len, "string"));
  std::string_view s(p, static_cast<size_t>(len));
  if (!IsValidUtf8(s)) return Invalid("string is not valid UTF-8");
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kStr));
  o->text.assign(s);
  return Push(o);
}

absl::Status Unpickler::PushBytes(uint64_t len) {
  const char* p;
  REPROD_ASSIGN_OR_RETURN(p, Take(len, "bytes"));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kBytes));
  o->data = p;
  o->size = static_cast<size_t>(len);
  return Push(o);
}

absl::Status Unpickler::PushTuple(std::vector<Obj*> items) {
  REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kTuple));
  o->items = std::move(items);
  return Push(o);
}

absl::Status Unpickler::ResolveGlobal(std::string_view module, std::string_view name, Callable* out,
                                      int64_t* extension_id) const {
  if (extension_ != nullptr) {
    if (std::optional<int64_t> id = extension_->FindGlobal(module, name)) {
      *out = Callable::kExtension;
      *extension_id = *id;
      return absl::OkStatus();
    }
  }
  if (std::optional<Callable> c = FindAllowedGlobal(module, name)) {
    *out = *c;
    return absl::OkStatus();
  }
  const std::string_view allowed =
      extension_ != nullptr ? extension_->AllowedSummary()
                            : "only numpy array/dtype/scalar reconstruction and plain containers "
                              "are allowed";
  return absl::PermissionDeniedError(
      absl::StrCat(in_.what, ": refused pickle global ",
                   Quote(absl::StrCat(std::string(module), ".", std::string(name)), 200),
                   " at offset ", Off(), " (", std::string(allowed), "; nothing is executed)"));
}

absl::Status Unpickler::PushGlobal(std::string_view module, std::string_view name) {
  Callable c;
  int64_t id = 0;
  REPROD_RETURN_IF_ERROR(ResolveGlobal(module, name, &c, &id));
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, New(Kind::kGlobal));
  o->callable = c;
  o->num.i = id;
  o->text = absl::StrCat(std::string(module), ".", std::string(name));
  return Push(o);
}

absl::Status Unpickler::PersistentLoad(Obj* pid) {
  Obj* o;
  REPROD_ASSIGN_OR_RETURN(o, extension_->PersistentLoad(*this, pid));
  return Push(o);
}

// ---------------------------------------------------------------------------
// The opcode groups.

absl::Status Unpickler::OpStack(unsigned char op) {
  const char* p;
  switch (op) {
    case 0x80: {  // PROTO
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "PROTO"));
      if (static_cast<unsigned char>(*p) > 5) {
        return Invalid(
            absl::StrCat("unsupported pickle protocol ", static_cast<unsigned char>(*p)));
      }
      return absl::OkStatus();
    }
    case 0x95: {  // FRAME: framing is irrelevant over a whole buffer.
      REPROD_ASSIGN_OR_RETURN(p, Take(8, "FRAME"));
      if (LoadLE64(p) > n_ - pos_) return Truncated("FRAME longer than the input");
      return absl::OkStatus();
    }
    case '(': {  // MARK
      if (marks_.size() >= limits_.max_marks) {
        return Exhausted(absl::StrCat("more open MARKs than ", LimitText(limits_.max_marks)));
      }
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    }
    case '0': {  // POP
      if (stack_.size() > Fence()) {
        stack_.pop_back();
      } else if (!marks_.empty()) {
        marks_.pop_back();
      } else {
        return Invalid("POP on an empty stack");
      }
      return absl::OkStatus();
    }
    case '1':  // POP_MARK
      return PopMark().status();
    case '2': {  // DUP
      Obj* top;
      REPROD_ASSIGN_OR_RETURN(top, Top());
      return Push(top);
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpNumber(unsigned char op) {
  const char* p;
  switch (op) {
    case 'N':  // NONE
      return PushNew(Kind::kNone);
    case 0x88:  // NEWTRUE
    case 0x89:  // NEWFALSE
      return PushBool(op == 0x88);
    case 'J': {  // BININT
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "BININT"));
      return PushInt(static_cast<int32_t>(LoadLE32(p)));
    }
    case 'K': {  // BININT1
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "BININT1"));
      return PushInt(static_cast<unsigned char>(*p));
    }
    case 'M': {  // BININT2
      REPROD_ASSIGN_OR_RETURN(p, Take(2, "BININT2"));
      return PushInt(LoadLE16(p));
    }
    case 0x8a: {  // LONG1
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "LONG1"));
      const uint64_t len = static_cast<unsigned char>(*p);
      REPROD_ASSIGN_OR_RETURN(p, Take(len, "LONG1"));
      return PushLong(p, len);
    }
    case 0x8b: {  // LONG4
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG4"));
      const int32_t len = static_cast<int32_t>(LoadLE32(p));
      if (len < 0) return Invalid("LONG4 with a negative length");
      REPROD_ASSIGN_OR_RETURN(p, Take(static_cast<uint64_t>(len), "LONG4"));
      return PushLong(p, static_cast<uint64_t>(len));
    }
    case 'I':  // INT (text)
    case 'L':  // LONG (text)
      return PushIntLine(op);
    case 'G': {  // BINFLOAT (big-endian)
      REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINFLOAT"));
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<unsigned char>(p[k]);
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return PushFloat(d);
    }
    case 'F': {  // FLOAT (text)
      std::string_view line;
      REPROD_ASSIGN_OR_RETURN(line, TakeLine("FLOAT"));
      double d;
      if (!absl::SimpleAtod(absl::string_view(line.data(), line.size()), &d)) {
        return Invalid("malformed FLOAT");
      }
      return PushFloat(d);
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpText(unsigned char op) {
  const char* p;
  switch (op) {
    case 'X': {  // BINUNICODE
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINUNICODE"));
      return PushUnicode(LoadLE32(p));
    }
    case 0x8c: {  // SHORT_BINUNICODE
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINUNICODE"));
      return PushUnicode(static_cast<unsigned char>(*p));
    }
    case 0x8d: {  // BINUNICODE8
      REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINUNICODE8"));
      return PushUnicode(LoadLE64(p));
    }
    case 'B': {  // BINBYTES
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINBYTES"));
      return PushBytes(LoadLE32(p));
    }
    case 'C': {  // SHORT_BINBYTES
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINBYTES"));
      return PushBytes(static_cast<unsigned char>(*p));
    }
    case 0x8e:    // BINBYTES8
    case 0x96: {  // BYTEARRAY8 (in-band protocol-5 buffer)
      REPROD_ASSIGN_OR_RETURN(p, Take(8, "BINBYTES8"));
      return PushBytes(LoadLE64(p));
    }
    case 'T': {  // BINSTRING (Python 2 str: kept as bytes)
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "BINSTRING"));
      const int32_t len = static_cast<int32_t>(LoadLE32(p));
      if (len < 0) return Invalid("BINSTRING with a negative length");
      return PushBytes(static_cast<uint64_t>(len));
    }
    case 'U': {  // SHORT_BINSTRING
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "SHORT_BINSTRING"));
      return PushBytes(static_cast<unsigned char>(*p));
    }
    case 0x97:  // NEXT_BUFFER
      return Invalid("out-of-band pickle buffers (NEXT_BUFFER) are not supported");
    case 0x98: {  // READONLY_BUFFER
      Obj* top;
      REPROD_ASSIGN_OR_RETURN(top, Top());
      if (top->kind != Kind::kBytes) return Invalid("READONLY_BUFFER on a non-buffer");
      return absl::OkStatus();
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpContainer(unsigned char op) {
  std::vector<Obj*> items;
  Obj* target;
  switch (op) {
    case ']':  // EMPTY_LIST
      return PushNew(Kind::kList);
    case '}':  // EMPTY_DICT
      return PushNew(Kind::kDict);
    case 0x8f:  // EMPTY_SET
      return PushNew(Kind::kSet);
    case ')':  // EMPTY_TUPLE
      return PushTuple({});
    case 0x85:    // TUPLE1
    case 0x86:    // TUPLE2
    case 0x87: {  // TUPLE3
      const size_t k = op - 0x84;
      if (stack_.size() < Fence() + k) return Invalid("pickle stack underflow");
      items.assign(stack_.end() - static_cast<ptrdiff_t>(k), stack_.end());
      stack_.resize(stack_.size() - k);
      return PushTuple(std::move(items));
    }
    case 't': {  // TUPLE
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      return PushTuple(std::move(items));
    }
    case 'l':     // LIST
    case 0x91: {  // FROZENSET
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
      Obj* o;
      REPROD_ASSIGN_OR_RETURN(o, New(op == 'l' ? Kind::kList : Kind::kSet));
      o->items = std::move(items);
      return Push(o);
    }
    case 'd': {  // DICT
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      Obj* o;
      REPROD_ASSIGN_OR_RETURN(o, New(Kind::kDict));
      REPROD_RETURN_IF_ERROR(SetItems(o, items));
      return Push(o);
    }
    case 'a': {  // APPEND
      Obj* v;
      REPROD_ASSIGN_OR_RETURN(v, Pop());
      REPROD_ASSIGN_OR_RETURN(target, Top());
      return Append(target, {v});
    }
    case 'e': {  // APPENDS
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      REPROD_ASSIGN_OR_RETURN(target, Top());
      return Append(target, items);
    }
    case 0x90: {  // ADDITEMS
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      REPROD_ASSIGN_OR_RETURN(target, Top());
      if (target->kind != Kind::kSet) return Invalid("ADDITEMS on a non-set");
      REPROD_RETURN_IF_ERROR(ChargeItems(items.size()));
      target->items.insert(target->items.end(), items.begin(), items.end());
      return absl::OkStatus();
    }
    case 's': {  // SETITEM
      Obj* v;
      REPROD_ASSIGN_OR_RETURN(v, Pop());
      Obj* k;
      REPROD_ASSIGN_OR_RETURN(k, Pop());
      REPROD_ASSIGN_OR_RETURN(target, Top());
      return SetItems(target, {k, v});
    }
    case 'u': {  // SETITEMS
      REPROD_ASSIGN_OR_RETURN(items, PopMark());
      REPROD_ASSIGN_OR_RETURN(target, Top());
      return SetItems(target, items);
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpMemo(unsigned char op) {
  const char* p;
  uint64_t idx;
  switch (op) {
    case 'p': {  // PUT (text)
      REPROD_ASSIGN_OR_RETURN(idx, TakeMemoIndexLine("PUT"));
      return Memoize(idx);
    }
    case 'q': {  // BINPUT
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "BINPUT"));
      return Memoize(static_cast<unsigned char>(*p));
    }
    case 'r': {  // LONG_BINPUT
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG_BINPUT"));
      return Memoize(LoadLE32(p));
    }
    case 0x94:  // MEMOIZE
      return Memoize(memo_.size());
    case 'g': {  // GET (text)
      REPROD_ASSIGN_OR_RETURN(idx, TakeMemoIndexLine("GET"));
      return Get(idx);
    }
    case 'h': {  // BINGET
      REPROD_ASSIGN_OR_RETURN(p, Take(1, "BINGET"));
      return Get(static_cast<unsigned char>(*p));
    }
    case 'j': {  // LONG_BINGET
      REPROD_ASSIGN_OR_RETURN(p, Take(4, "LONG_BINGET"));
      return Get(LoadLE32(p));
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpObject(unsigned char op) {
  std::string_view module, name;
  Obj* a;
  Obj* b;
  switch (op) {
    case 'c': {  // GLOBAL "module\nname\n"
      REPROD_ASSIGN_OR_RETURN(module, TakeLine("GLOBAL"));
      REPROD_ASSIGN_OR_RETURN(name, TakeLine("GLOBAL"));
      return PushGlobal(module, name);
    }
    case 0x93: {  // STACK_GLOBAL
      REPROD_ASSIGN_OR_RETURN(b, Pop());
      REPROD_ASSIGN_OR_RETURN(a, Pop());
      if (a->kind != Kind::kStr || b->kind != Kind::kStr) {
        return Invalid("STACK_GLOBAL needs two strings");
      }
      return PushGlobal(a->text, b->text);
    }
    case 'i': {  // INST "module\nname\n": checked, then refused.
      REPROD_ASSIGN_OR_RETURN(module, TakeLine("INST"));
      REPROD_ASSIGN_OR_RETURN(name, TakeLine("INST"));
      Callable c;
      int64_t id = 0;
      REPROD_RETURN_IF_ERROR(ResolveGlobal(module, name, &c, &id));
      return Invalid("unsupported pickle opcode INST");
    }
    case 'R': {  // REDUCE: callable, args
      REPROD_ASSIGN_OR_RETURN(b, Pop());
      REPROD_ASSIGN_OR_RETURN(a, Pop());
      return Reduce(a, b);
    }
    case 0x81: {  // NEWOBJ: cls, args
      REPROD_ASSIGN_OR_RETURN(b, Pop());
      REPROD_ASSIGN_OR_RETURN(a, Pop());
      return NewObj(a, b);
    }
    case 0x92: {  // NEWOBJ_EX: cls, args, kwargs
      Obj* kwargs;
      REPROD_ASSIGN_OR_RETURN(kwargs, Pop());
      REPROD_ASSIGN_OR_RETURN(b, Pop());
      REPROD_ASSIGN_OR_RETURN(a, Pop());
      if (kwargs->kind != Kind::kDict || !kwargs->items.empty()) {
        return Invalid("NEWOBJ_EX with keyword arguments");
      }
      return NewObj(a, b);
    }
    case 'b': {  // BUILD: target, state
      REPROD_ASSIGN_OR_RETURN(b, Pop());
      REPROD_ASSIGN_OR_RETURN(a, Top());
      return Build(a, b);
    }
    case 'Q': {  // BINPERSID
      if (extension_ == nullptr) break;
      REPROD_ASSIGN_OR_RETURN(a, Pop());
      return PersistentLoad(a);
    }
  }
  return OpRefused(op);
}

absl::Status Unpickler::OpRefused(unsigned char op) {
  switch (op) {
    case 'P':  // PERSID
    case 'Q':  // BINPERSID
      return Invalid("pickle uses persistent ids (a torch.save archive?); not supported");
    case 0x82:
    case 0x83:
    case 0x84:
      return Invalid("pickle uses the copyreg extension registry; not supported");
    case 'S':
    case 'V':
    case 'o': {
      return Invalid(
          absl::StrCat("unsupported pickle opcode ", Quote(std::string(1, static_cast<char>(op)))));
    }
    default:
      return Invalid(
          absl::StrCat("unknown pickle opcode 0x", HexPrefix(std::string_view(p_ + op_pos_, 1))));
  }
}

const Unpickler::OpHandler* Unpickler::OpTable() {
  static const std::array<OpHandler, 256> table = [] {
    std::array<OpHandler, 256> t;
    t.fill(&Unpickler::OpRefused);
    auto set = [&t](std::string_view ops, OpHandler h) {
      for (char c : ops) t[static_cast<unsigned char>(c)] = h;
    };
    set("\x80\x95()012", &Unpickler::OpStack);
    set("N\x88\x89JKM\x8a\x8bILGF", &Unpickler::OpNumber);
    set("X\x8c\x8d"
        "BC\x8e\x96TU\x97\x98",
        &Unpickler::OpText);
    set("]}\x8f)\x85\x86\x87tl\x91"
        "daes\x90u",
        &Unpickler::OpContainer);
    set("pqr\x94ghj", &Unpickler::OpMemo);
    set("c\x93iR\x81\x92"
        "bQ",
        &Unpickler::OpObject);
    return t;
  }();
  return table.data();
}

absl::StatusOr<Obj*> Unpickler::Run() {
  const OpHandler* table = OpTable();
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) return Truncated("no STOP opcode");
    const auto op = static_cast<unsigned char>(p_[pos_++]);
    if (op == '.') return Pop();  // STOP
    REPROD_RETURN_IF_ERROR((this->*table[op])(op));
  }
}

// ---------------------------------------------------------------------------

absl::Status UnpickleAndFlatten(const ByteSource& input, const std::string& key_prefix,
                                ReadBudget* budget, TensorFile* out, const PickleLimits& limits) {
  Unpickler u(input, budget, limits);
  Obj* root;
  REPROD_ASSIGN_OR_RETURN(root, u.Run());
  Flattener f(u, budget, limits, out, key_prefix);
  return f.Visit(root, key_prefix, 0);
}

}  // namespace reprod::formats::internal
