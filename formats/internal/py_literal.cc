#include "formats/internal/py_literal.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace reprod::formats::internal {

const PyLiteral* PyLiteral::Find(std::string_view key) const {
  if (kind != Kind::kDict) return nullptr;
  for (size_t i = 0; i + 1 < items.size(); i += 2) {
    if (items[i].kind == Kind::kStr && items[i].s == key) return &items[i + 1];
  }
  return nullptr;
}

namespace {

constexpr int kMaxDepth = 32;

class Parser {
 public:
  explicit Parser(std::string_view text) : t_(text) {}

  absl::StatusOr<PyLiteral> ParseAll() {
    auto v = Parse(0);
    if (!v.ok()) return v;
    SkipSpace();
    if (pos_ != t_.size()) return Error("trailing characters");
    return v;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed header literal: ", std::string(what), " at header offset ", pos_));
  }

  void SkipSpace() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\t' ||
                                t_[pos_] == '\n' || t_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(std::string_view word) {
    if (t_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  absl::StatusOr<PyLiteral> Parse(int depth) {
    if (depth > kMaxDepth) return Error("nesting too deep");
    SkipSpace();
    if (pos_ >= t_.size()) return Error("unexpected end");
    const char c = t_[pos_];
    PyLiteral v;
    if (c == '\'' || c == '"') return ParseStr();
    if (c == '(' || c == '[') {
      const char close = c == '(' ? ')' : ']';
      v.kind = c == '(' ? PyLiteral::Kind::kTuple : PyLiteral::Kind::kList;
      ++pos_;
      for (;;) {
        SkipSpace();
        if (pos_ < t_.size() && t_[pos_] == close) {
          ++pos_;
          return v;
        }
        auto item = Parse(depth + 1);
        if (!item.ok()) return item;
        v.items.push_back(*std::move(item));
        SkipSpace();
        if (pos_ < t_.size() && t_[pos_] == ',') {
          ++pos_;
        } else if (pos_ >= t_.size() || t_[pos_] != close) {
          return Error("expected ',' or closing bracket");
        }
      }
    }
    if (c == '{') {
      v.kind = PyLiteral::Kind::kDict;
      ++pos_;
      for (;;) {
        SkipSpace();
        if (pos_ < t_.size() && t_[pos_] == '}') {
          ++pos_;
          return v;
        }
        auto key = Parse(depth + 1);
        if (!key.ok()) return key;
        SkipSpace();
        if (pos_ >= t_.size() || t_[pos_] != ':') return Error("expected ':'");
        ++pos_;
        auto value = Parse(depth + 1);
        if (!value.ok()) return value;
        v.items.push_back(*std::move(key));
        v.items.push_back(*std::move(value));
        SkipSpace();
        if (pos_ < t_.size() && t_[pos_] == ',') {
          ++pos_;
        } else if (pos_ >= t_.size() || t_[pos_] != '}') {
          return Error("expected ',' or '}'");
        }
      }
    }
    if (Consume("True")) {
      v.kind = PyLiteral::Kind::kBool;
      v.b = true;
      return v;
    }
    if (Consume("False")) {
      v.kind = PyLiteral::Kind::kBool;
      return v;
    }
    if (Consume("None")) return v;
    if (c == '-' || c == '+' || (c >= '0' && c <= '9')) return ParseInt();
    return Error("unexpected character");
  }

  absl::StatusOr<PyLiteral> ParseInt() {
    bool neg = false;
    if (t_[pos_] == '-' || t_[pos_] == '+') {
      neg = t_[pos_] == '-';
      ++pos_;
    }
    if (pos_ >= t_.size() || t_[pos_] < '0' || t_[pos_] > '9') {
      return Error("expected digits");
    }
    uint64_t mag = 0;
    const uint64_t limit =
        static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + (neg ? 1 : 0);
    while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') {
      const uint64_t digit = static_cast<uint64_t>(t_[pos_] - '0');
      if (mag > (limit - digit) / 10) return Error("integer out of range");
      mag = mag * 10 + digit;
      ++pos_;
    }
    if (pos_ < t_.size() && (t_[pos_] == 'L' || t_[pos_] == 'l')) ++pos_;
    PyLiteral v;
    v.kind = PyLiteral::Kind::kInt;
    v.i = neg ? static_cast<int64_t>(0 - mag) : static_cast<int64_t>(mag);
    return v;
  }

  absl::StatusOr<PyLiteral> ParseStr() {
    const char quote = t_[pos_++];
    PyLiteral v;
    v.kind = PyLiteral::Kind::kStr;
    while (pos_ < t_.size() && t_[pos_] != quote) {
      char c = t_[pos_++];
      if (c == '\\') {
        if (pos_ >= t_.size()) break;
        c = t_[pos_++];
        switch (c) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case 'r': c = '\r'; break;
          case '0': c = '\0'; break;
          case '\\': case '\'': case '"': break;
          default: return Error("unsupported string escape");
        }
      }
      v.s += c;
    }
    if (pos_ >= t_.size()) return Error("unterminated string");
    ++pos_;
    return v;
  }

  std::string_view t_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<PyLiteral> ParsePyLiteral(std::string_view text) {
  return Parser(text).ParseAll();
}

}  // namespace reprod::formats::internal
