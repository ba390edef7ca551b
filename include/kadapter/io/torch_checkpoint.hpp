/// @file torch_checkpoint.hpp
/// @brief Reader of PyTorch checkpoints (`torch.save` of a state dict, `pytorch_model.bin`),
/// without Python, and their conversion to safetensors.
///
/// Two container formats are read:
/// - **zip** (torch >= 1.6): a zip archive of `PREFIX/data.pkl` (the pickled object) and one
///   stored (uncompressed) entry `PREFIX/data/KEY` per storage;
/// - **legacy** (torch < 1.6, the format of the K-Adapter authors' released adapters, saved
///   with torch 1.3): five pickles in a row (magic number 0x1950a86a20f9469cfc6c, protocol
///   version 1001, system info, the object, the list of storage keys), then each storage as
///   a little-endian int64 element count followed by its bytes.
///
/// The pickle (protocol 2 to 5) is interpreted by a small, closed machine: nothing in the file
/// is ever executed. It knows the opcodes and the few callables a state dict pickles to
/// (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `_rebuild_tensor`,
/// `_rebuild_parameter`) and the storage classes (`torch.FloatStorage`, ...,
/// `torch.cuda.FloatStorage`, ...). Another `torch.` callable (a quantized or sparse tensor;
/// `torch.device` excepted) is an error naming the file, the byte and the callable; any other
/// object (an `argparse.Namespace` saved beside the weights) is not called and is listed as
/// skipped.
/// read_torch_object() gives any other saved object (the authors' `training_args.bin`) as
/// JSON. Tensors are copied out as contiguous row-major arrays (views with strides, offsets or
/// stride 0 included); all of them together may take four times the file plus 64 MiB, so a
/// malformed file cannot ask for unbounded memory. Values live in an arena: freeing them does
/// not recurse, however deeply they nest (read_torch_object() stops at 64 levels). The file is
/// mapped while it is read, as SafetensorsFile maps its file: it must not be truncated
/// meanwhile (the system then ends the process with SIGBUS).
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "kadapter/core/dtype.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/io/safetensors.hpp"
#include "kadapter/io/unicode.hpp"

namespace kadapter::io {

/// @brief One tensor of a PyTorch checkpoint, contiguous and row-major.
struct TorchTensor {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  ///< extents, outermost first; empty for a scalar
  std::vector<std::byte> data;      ///< little-endian elements, shape's product of them
};

namespace detail::torch_pickle {

struct Value;
using Ref = Value*;  // owned by an Arena: no recursion on destruction, cycles free nothing twice

/// A pickled value, as far as a state dict needs one.
struct Value {
  /// `object`: what a callable other than the known ones returned, never called: `s` names
  /// the callable, `args` is its argument tuple (shared, not copied) and `state` what BUILD
  /// gave it.
  enum class Kind { none, boolean, integer, big_integer, real, text, tuple, list, dict, global, object, storage, tensor };
  Kind kind = Kind::none;
  std::int64_t i = 0;          // boolean, integer
  double f = 0;                // real
  std::string s;               // text; global: "module.name"; big_integer: its bytes
  bool bytes = false;          // text: pickled as bytes (BINBYTES), not str
  std::vector<Ref> items;      // tuple, list; dict: key, value, key, value, ...
  // storage
  std::string key;             // storage key
  DType dtype = DType::F32;    // storage element type
  std::int64_t offset = 0;     // storage (a legacy view): first element in the root storage
  // tensor
  Ref storage;
  std::int64_t storage_offset = 0;
  std::vector<std::int64_t> size, stride;
  // object
  Ref args = nullptr, state = nullptr;
};

/// Owns every value of the pickles of one file.
class Arena {
 public:
  Ref make(Value::Kind k) {
    values_.emplace_back();
    values_.back().kind = k;
    return &values_.back();
  }

 private:
  std::deque<Value> values_;
};

/// The storage class names torch pickles, and their element types.
inline std::optional<DType> storage_dtype(std::string_view global) {
  // A checkpoint saved from the GPU names the CUDA classes (the bytes are the same).
  std::string host(global);
  if (host.starts_with("torch.cuda.")) host.erase(6, 5);
  static const std::pair<std::string_view, DType> known[] = {
      {"torch.FloatStorage", DType::F32},   {"torch.DoubleStorage", DType::F64}, {"torch.HalfStorage", DType::F16},
      {"torch.BFloat16Storage", DType::BF16}, {"torch.LongStorage", DType::I64}, {"torch.IntStorage", DType::I32},
      {"torch.ShortStorage", DType::I16},   {"torch.CharStorage", DType::I8},    {"torch.ByteStorage", DType::U8},
      {"torch.BoolStorage", DType::BOOL}};
  for (const auto& [name, d] : known)
    if (name == host) return d;
  return std::nullopt;
}

/// Runs one pickle from @p bytes; `legacy` selects the persistent-id layout.
class Machine {
 public:
  Machine(Arena& arena, std::string where, std::span<const std::byte> bytes, bool legacy)
      : arena_(arena), where_(std::move(where)), b_(bytes), legacy_(legacy) {}

  /// The pickled object; `end()` is then the byte after STOP.
  Ref run() {
    for (;;) {
      const std::size_t at = pos_;
      const auto op = static_cast<unsigned char>(u8());
      switch (op) {
        case 0x80: (void)u8(); break;                              // PROTO
        case 0x95: (void)take(8); break;                           // FRAME (protocol 4)
        case '(': marks_.push_back(stack_.size()); break;          // MARK
        case '.': {                                                // STOP
          if (stack_.size() != 1 || !marks_.empty()) fail(at, "STOP with " + std::to_string(stack_.size()) + " values on the stack");
          return stack_.back();
        }
        case 'N': push(arena_.make(Value::Kind::none)); break;
        case 0x88: case 0x89: {                                    // NEWTRUE, NEWFALSE
          auto v = arena_.make(Value::Kind::boolean);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'J': push(integer(static_cast<std::int32_t>(le(4)))); break;  // BININT
        case 'K': push(integer(static_cast<std::int64_t>(le(1)))); break;  // BININT1
        case 'M': push(integer(static_cast<std::int64_t>(le(2)))); break;  // BININT2
        case 0x8a: case 0x8b: {                                    // LONG1, LONG4
          const std::size_t n = op == 0x8a ? le(1) : le(4);
          const auto bytes = take(n);
          if (n <= 8) {
            std::uint64_t u = 0;
            for (std::size_t k = 0; k < n; ++k) u |= static_cast<std::uint64_t>(bytes[k]) << (8 * k);
            if (n > 0 && n < 8 && (static_cast<unsigned>(bytes[n - 1]) & 0x80)) u |= ~std::uint64_t{0} << (8 * n);  // sign
            push(integer(static_cast<std::int64_t>(u)));
          } else {
            auto v = arena_.make(Value::Kind::big_integer);
            v->s.assign(reinterpret_cast<const char*>(bytes.data()), n);
            push(v);
          }
          break;
        }
        case 'G': {                                                // BINFLOAT, big-endian
          std::uint64_t u = 0;
          for (std::byte x : take(8)) u = (u << 8) | static_cast<std::uint64_t>(x);
          auto v = arena_.make(Value::Kind::real);
          v->f = std::bit_cast<double>(u);
          push(v);
          break;
        }
        case 'X': push(text(le(4))); break;                        // BINUNICODE
        case 0x8c: push(text(le(1))); break;                       // SHORT_BINUNICODE
        case 0x8d: push(text(le(8))); break;                       // BINUNICODE8
        case 'T': push(text(le(4))); break;                        // BINSTRING
        case 'U': push(text(le(1))); break;                        // SHORT_BINSTRING
        case 'B': case 'C': case 0x8e: {                           // BINBYTES, SHORT_BINBYTES, BINBYTES8
          auto v = text(op == 'B' ? le(4) : op == 'C' ? le(1) : le(8));
          v->bytes = true;
          push(v);
          break;
        }
        case ')': push(arena_.make(Value::Kind::tuple)); break;           // EMPTY_TUPLE
        case ']': push(arena_.make(Value::Kind::list)); break;            // EMPTY_LIST
        case '}': push(arena_.make(Value::Kind::dict)); break;            // EMPTY_DICT
        case 0x85: case 0x86: case 0x87: {                         // TUPLE1..3
          auto v = arena_.make(Value::Kind::tuple);
          v->items = pop_n(at, static_cast<std::size_t>(op - 0x84));
          push(v);
          break;
        }
        case 't': case 'l': case 'd': {                            // TUPLE, LIST, DICT from MARK
          auto v = arena_.make(op == 't' ? Value::Kind::tuple : op == 'l' ? Value::Kind::list : Value::Kind::dict);
          v->items = pop_mark(at);
          if (op == 'd' && v->items.size() % 2) fail(at, "DICT with an odd number of items");
          for (std::size_t k = 0; op == 'd' && k < v->items.size(); k += 2) key_kind(at, v->items[k]);
          push(v);
          break;
        }
        case 0x8f: push(arena_.make(Value::Kind::list)); break;    // EMPTY_SET (kept as a list)
        case 0x90: {                                               // ADDITEMS
          auto xs = pop_mark(at);
          auto& l = container(at, Value::Kind::list)->items;
          l.insert(l.end(), xs.begin(), xs.end());
          break;
        }
        case 0x91: {                                               // FROZENSET from MARK (a list)
          auto v = arena_.make(Value::Kind::list);
          v->items = pop_mark(at);
          push(v);
          break;
        }
        case 'a': {                                                // APPEND
          auto x = pop(at);
          container(at, Value::Kind::list)->items.push_back(x);
          break;
        }
        case 'e': {                                                // APPENDS
          auto xs = pop_mark(at);
          auto& l = container(at, Value::Kind::list)->items;
          l.insert(l.end(), xs.begin(), xs.end());
          break;
        }
        case 's': {                                                // SETITEM
          auto val = pop(at), k = pop(at);
          set_item(at, container(at, Value::Kind::dict), k, val);
          break;
        }
        case 'u': {                                                // SETITEMS
          auto xs = pop_mark(at);
          if (xs.size() % 2) fail(at, "SETITEMS with an odd number of items");
          auto d = container(at, Value::Kind::dict);
          for (std::size_t k = 0; k < xs.size(); k += 2) set_item(at, d, xs[k], xs[k + 1]);
          break;
        }
        case 'q': memo(le(1)); break;                              // BINPUT
        case 'r': memo(le(4)); break;                              // LONG_BINPUT
        case 0x94: memo(memo_.size()); break;                      // MEMOIZE
        case 'h': push(recall(at, le(1))); break;                  // BINGET
        case 'j': push(recall(at, le(4))); break;                  // LONG_BINGET
        case 'c': {                                                // GLOBAL module\nname\n
          std::string module = line(at), name = line(at);
          push(global(module + "." + name));
          break;
        }
        case 0x93: {                                               // STACK_GLOBAL
          auto name = pop(at), module = pop(at);
          if (name->kind != Value::Kind::text || module->kind != Value::Kind::text) fail(at, "STACK_GLOBAL of non-strings");
          push(global(module->s + "." + name->s));
          break;
        }
        case 'Q': push(persistent(at, pop(at))); break;            // BINPERSID
        case 'R': {                                                // REDUCE
          auto args = pop(at), fn = pop(at);
          push(reduce(at, fn, args));
          break;
        }
        case 'b': {                                                // BUILD: an object keeps the state
          const auto state = pop(at);
          const auto obj = top(at);
          if (obj->kind != Value::Kind::dict && obj->kind != Value::Kind::tensor && obj->kind != Value::Kind::object)
            fail(at, "BUILD on something that is not a dict, a tensor or an object");
          if (obj->kind == Value::Kind::object) obj->state = state;
          break;
        }
        case 0x81: {                                               // NEWOBJ: cls(*args), not called
          const auto args = pop(at), cls = pop(at);
          if (cls->kind != Value::Kind::global) fail(at, "NEWOBJ of something that is not a class");
          auto obj = arena_.make(Value::Kind::object);
          obj->s = cls->s;
          if (args->kind == Value::Kind::tuple) obj->args = args;
          push(obj);
          break;
        }
        case 0x30: (void)pop(at); break;                           // POP
        default: fail(at, "unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

  std::size_t end() const noexcept { return pos_; }

  /// The storages the object refers to: key -> element type.
  const std::map<std::string, DType>& storages() const noexcept { return storages_; }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw Error(where_ + ", byte " + std::to_string(at) + ": " + what);
  }
  static std::string hex(unsigned v) {
    const char* d = "0123456789abcdef";
    return std::string{d[(v >> 4) & 15], d[v & 15]};
  }
  std::byte u8() { return take(1)[0]; }
  std::span<const std::byte> take(std::size_t n) {
    if (n > b_.size() - pos_) fail(pos_, "the pickle ends early (" + std::to_string(n) + " more bytes needed)");
    auto s = b_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::uint64_t le(std::size_t n) {
    std::uint64_t u = 0;
    const auto s = take(n);
    for (std::size_t k = 0; k < n; ++k) u |= static_cast<std::uint64_t>(s[k]) << (8 * k);
    return u;
  }
  std::string line(std::size_t at) {
    std::string out;
    for (;;) {
      if (pos_ >= b_.size()) fail(at, "GLOBAL without its end of line");
      const char c = static_cast<char>(b_[pos_++]);
      if (c == '\n') return out;
      if (out.size() > 200) fail(at, "GLOBAL name longer than 200 characters");
      out += c;
    }
  }
  Ref integer(std::int64_t v) {
    auto r = arena_.make(Value::Kind::integer);
    r->i = v;
    return r;
  }
  Ref text(std::uint64_t n) {
    const auto s = take(static_cast<std::size_t>(std::min<std::uint64_t>(n, b_.size())));
    if (s.size() != n) fail(pos_, "a string runs past the end");
    auto r = arena_.make(Value::Kind::text);
    r->s.assign(reinterpret_cast<const char*>(s.data()), s.size());
    return r;
  }
  Ref global(std::string name) {
    auto r = arena_.make(Value::Kind::global);
    r->s = std::move(name);
    return r;
  }
  void push(Ref v) {
    if (stack_.size() > (1u << 20)) fail(pos_, "more than 2^20 values on the stack");
    stack_.push_back(std::move(v));
  }
  Ref pop(std::size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail(at, "a value is missing on the stack");
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Ref top(std::size_t at) {
    if (stack_.empty()) fail(at, "a value is missing on the stack");
    return stack_.back();
  }
  std::vector<Ref> pop_n(std::size_t at, std::size_t n) {
    if (stack_.size() < n || (!marks_.empty() && stack_.size() - n < marks_.back())) fail(at, "values are missing on the stack");
    std::vector<Ref> out(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<Ref> pop_mark(std::size_t at) {
    if (marks_.empty()) fail(at, "no MARK for this opcode");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return out;
  }
  Ref container(std::size_t at, Value::Kind k) {
    const Ref& c = top(at);
    if (c->kind != k) fail(at, std::string("adding items to something that is not a ") + (k == Value::Kind::list ? "list" : "dict"));
    return c;
  }
  // Keys are appended as they come (a pickled dict names each key once; a repeated tensor
  // name is refused when the tensors are collected).
  void key_kind(std::size_t at, const Ref& k) {
    if (k->kind != Value::Kind::text && k->kind != Value::Kind::integer) fail(at, "a dict key that is not a string or an integer");
  }
  void set_item(std::size_t at, Ref d, Ref k, Ref v) {
    key_kind(at, k);
    d->items.push_back(k);
    d->items.push_back(v);
  }
  void memo(std::uint64_t k) {
    if (stack_.empty()) fail(pos_, "PUT with an empty stack");
    memo_[k] = stack_.back();
  }
  Ref recall(std::size_t at, std::uint64_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail(at, "memo entry " + std::to_string(k) + " was never set");
    return it->second;
  }
  static bool is_int(const Ref& v) { return v->kind == Value::Kind::integer; }
  std::vector<std::int64_t> ints(std::size_t at, const Ref& v, const char* what) {
    if (v->kind != Value::Kind::tuple && v->kind != Value::Kind::list) fail(at, std::string(what) + " is not a tuple");
    std::vector<std::int64_t> out;
    for (const auto& x : v->items) {
      if (!is_int(x) || x->i < 0) fail(at, std::string(what) + " holds something that is not a non-negative integer");
      out.push_back(x->i);
    }
    return out;
  }

  /// ('storage', StorageClass, key, location, numel[, view metadata]).
  Ref persistent(std::size_t at, const Ref& pid) {
    const auto& t = pid->items;
    const std::size_t want = legacy_ ? 6 : 5;
    if (pid->kind != Value::Kind::tuple || t.size() != want || t[0]->kind != Value::Kind::text || t[0]->s != "storage")
      fail(at, "a persistent id that is not ('storage', ...) with " + std::to_string(want) + " fields");
    if (t[1]->kind != Value::Kind::global) fail(at, "a storage without its class");
    const auto dtype = storage_dtype(t[1]->s);
    if (!dtype) fail(at, "storage class " + t[1]->s + " is not supported");
    if (t[2]->kind != Value::Kind::text || !is_int(t[4]) || t[4]->i < 0) fail(at, "a storage with a malformed key or size");
    auto r = arena_.make(Value::Kind::storage);
    r->key = t[2]->s;
    r->dtype = *dtype;
    if (legacy_ && t[5]->kind != Value::Kind::none) {
      // A view into another storage: (view key, element offset, view size).
      const auto& v = t[5]->items;
      if (t[5]->kind != Value::Kind::tuple || v.size() != 3 || v[0]->kind != Value::Kind::text || !is_int(v[1]) || v[1]->i < 0)
        fail(at, "a storage view with malformed metadata");
      r->offset = v[1]->i;
    }
    const auto [it, fresh] = storages_.try_emplace(r->key, *dtype);
    if (!fresh && it->second != *dtype) fail(at, "storage " + r->key + " is used with two element types");
    return r;
  }

  Ref reduce(std::size_t at, const Ref& fn, const Ref& args) {
    if (fn->kind != Value::Kind::global) fail(at, "REDUCE of something that is not a class or function");
    if (args->kind != Value::Kind::tuple) fail(at, "REDUCE of " + fn->s + " without an argument tuple");
    const auto& a = args->items;
    if (fn->s == "collections.OrderedDict") {
      if (!a.empty()) fail(at, "collections.OrderedDict with arguments");
      return arena_.make(Value::Kind::dict);
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2" || fn->s == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || a[0]->kind != Value::Kind::storage || !is_int(a[1]) || a[1]->i < 0)
        fail(at, fn->s + " with arguments that are not (storage, offset, size, stride, ...)");
      auto t = arena_.make(Value::Kind::tensor);
      t->storage = a[0];
      if (a[1]->i > std::numeric_limits<std::int64_t>::max() - a[0]->offset) fail(at, "a tensor's storage offset overflows");
      t->storage_offset = a[1]->i + a[0]->offset;
      t->size = ints(at, a[2], "a tensor's size");
      t->stride = ints(at, a[3], "a tensor's stride");
      if (t->size.size() != t->stride.size()) fail(at, "a tensor whose size and stride differ in length");
      return t;
    }
    if (fn->s == "torch._utils._rebuild_parameter") {
      if (a.empty() || a[0]->kind != Value::Kind::tensor) fail(at, "torch._utils._rebuild_parameter without a tensor");
      return a[0];
    }
    if (fn->s != "torch.device" && (fn->s.starts_with("torch._utils._rebuild") || fn->s.starts_with("torch.")))
      fail(at, "the checkpoint calls " + fn->s + ", which a state dict of dense tensors does not (not supported)");
    // Anything else (an argparse.Namespace, a pathlib path, a torch.device) is not called: it
    // stays a value that is not a tensor (listed as skipped in a state dict).
    auto obj = arena_.make(Value::Kind::object);
    obj->s = fn->s;
    obj->args = args;
    return obj;
  }

  Arena& arena_;
  std::string where_;
  std::span<const std::byte> b_;
  bool legacy_;
  std::size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<std::size_t> marks_;
  std::map<std::uint64_t, Ref> memo_;
  std::map<std::string, DType> storages_;
};

/// A zip archive's stored entries: name -> bytes (a view of the file).
inline std::map<std::string, std::span<const std::byte>> zip_entries(const std::string& file, std::span<const std::byte> z) {
  auto fail = [&](const std::string& what) -> void { throw Error(file + ": " + what + " (not a readable zip archive)"); };
  auto rd = [&](std::size_t at, std::size_t n) {
    if (at > z.size() || n > z.size() - at) fail("a record runs past the end of the file");
    std::uint64_t u = 0;
    for (std::size_t k = 0; k < n; ++k) u |= static_cast<std::uint64_t>(z[at + k]) << (8 * k);
    return u;
  };
  // End of central directory: the last 0x06054b50 within 65557 bytes of the end.
  if (z.size() < 22) fail("too short for a zip archive");
  std::size_t eocd = z.size() - 22;
  const std::size_t lowest = z.size() > 65557 ? z.size() - 65557 : 0;
  while (rd(eocd, 4) != 0x06054b50) {
    if (eocd == lowest) fail("no end-of-central-directory record");
    --eocd;
  }
  std::uint64_t count = rd(eocd + 10, 2), cd = rd(eocd + 16, 4);
  if (count == 0xFFFF || cd == 0xFFFFFFFF) {
    // Zip64: the locator just before points at the zip64 end record.
    if (eocd < 20 || rd(eocd - 20, 4) != 0x07064b50) fail("zip64 fields without a zip64 locator");
    const std::uint64_t rec = rd(eocd - 20 + 8, 8);
    if (rd(static_cast<std::size_t>(rec), 4) != 0x06064b50) fail("no zip64 end-of-central-directory record");
    count = rd(static_cast<std::size_t>(rec) + 32, 8);
    cd = rd(static_cast<std::size_t>(rec) + 48, 8);
  }
  std::map<std::string, std::span<const std::byte>> out;
  std::size_t p = static_cast<std::size_t>(cd);
  for (std::uint64_t e = 0; e < count; ++e) {
    if (rd(p, 4) != 0x02014b50) fail("a central directory entry has a bad signature");
    const auto method = rd(p + 10, 2);
    std::uint64_t csize = rd(p + 20, 4), usize = rd(p + 24, 4);
    const std::size_t nlen = rd(p + 28, 2), xlen = rd(p + 30, 2), clen = rd(p + 32, 2);
    std::uint64_t local = rd(p + 42, 4);
    if (p + 46 + nlen > z.size()) fail("an entry name runs past the end of the file");
    std::string name(reinterpret_cast<const char*>(z.data() + p + 46), nlen);
    // Zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
    for (std::size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {
      const auto id = rd(x, 2), len = rd(x + 2, 2);
      if (id == 0x0001) {
        std::size_t q = x + 4;
        if (usize == 0xFFFFFFFF) { usize = rd(q, 8); q += 8; }
        if (csize == 0xFFFFFFFF) { csize = rd(q, 8); q += 8; }
        if (local == 0xFFFFFFFF) local = rd(q, 8);
      }
      x += 4 + static_cast<std::size_t>(len);
    }
    if (method != 0) fail("entry " + name + " is compressed (method " + std::to_string(method) + "); torch.save stores entries uncompressed");
    if (csize != usize) fail("entry " + name + " has two sizes");
    if (rd(static_cast<std::size_t>(local), 4) != 0x04034b50) fail("entry " + name + " has no local header");
    const std::size_t start = static_cast<std::size_t>(local) + 30 + rd(static_cast<std::size_t>(local) + 26, 2) +
                              rd(static_cast<std::size_t>(local) + 28, 2);
    if (start > z.size() || csize > z.size() - start) fail("entry " + name + " runs past the end of the file");
    out[name] = z.subspan(start, static_cast<std::size_t>(csize));
    p += 46 + nlen + xlen + clen;
  }
  return out;
}

/// A torch.save file read: its bytes (mapped, not copied), its format and the pickled object
/// (values in an arena).
struct File {
  File() = default;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (map != nullptr) ::munmap(map, bytes.size());
  }
  void* map = nullptr;
  std::span<const std::byte> bytes;                         // the whole file
  std::string format;                                       // "zip" or "legacy"
  Ref root = nullptr;
  std::map<std::string, std::span<const std::byte>> data;  // storage key -> bytes (views of `bytes`)
};

/// Read @p path (either container format) into @p f, its values into @p arena.
inline void read_file(const std::filesystem::path& path, Arena& arena, File& f) {
  const std::string file = path.string();
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO does not block: fstat refuses it
    if (fd < 0) throw Error(file + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(file + ": not a regular file");
    }
    const auto n = static_cast<std::size_t>(st.st_size);
    if (n > 0) {
      void* m = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
      const int saved = errno;
      ::close(fd);
      if (m == MAP_FAILED) throw Error(file + ": cannot read (mmap: " + std::strerror(saved) + ")");
      f.map = m;
      f.bytes = std::span<const std::byte>(static_cast<const std::byte*>(m), n);
    } else {
      ::close(fd);
    }
  }
  const std::span<const std::byte> all = f.bytes;
  auto starts = [&](std::string_view magic) {
    return all.size() >= magic.size() && std::memcmp(all.data(), magic.data(), magic.size()) == 0;
  };
  Ref& root = f.root;
  auto& data = f.data;
  std::map<std::string, DType> types;
  if (starts("PK\x03\x04")) {
    f.format = "zip";
    const auto entries = zip_entries(file, all);
    std::string prefix;
    for (const auto& [name, span] : entries)
      if (name.ends_with("/data.pkl") && name.find('/') == name.size() - 9) prefix = name.substr(0, name.size() - 8);
    if (prefix.empty()) throw Error(file + ": a zip archive without PREFIX/data.pkl (not a torch.save checkpoint)");
    if (const auto bo = entries.find(prefix + "byteorder"); bo != entries.end() &&
        std::string_view(reinterpret_cast<const char*>(bo->second.data()), bo->second.size()) != "little")
      throw Error(file + ": " + prefix + "byteorder is not \"little\" (a big-endian checkpoint is not supported)");
    Machine m(arena, file + ": " + prefix + "data.pkl", entries.at(prefix + "data.pkl"), false);
    root = m.run();
    types = m.storages();
    for (const auto& [key, dtype] : types) {
      const auto it = entries.find(prefix + "data/" + key);
      if (it == entries.end()) throw Error(file + ": storage " + key + " has no entry " + prefix + "data/" + key);
      data[key] = it->second;
    }
  } else if (all.size() >= 2 && all[0] == std::byte{0x80} && all[1] >= std::byte{2} && all[1] <= std::byte{5}) {
    // A pickle (protocol 2 to 5): torch.save's legacy format begins with its magic number.
    f.format = "legacy";
    std::size_t pos = 0;
    auto next = [&](const char* what) {
      Machine m(arena, file + ": the " + std::string(what) + " pickle (at byte " + std::to_string(pos) + ")", all.subspan(pos),
                true);
      auto v = m.run();
      pos += m.end();
      return std::pair{v, m.storages()};
    };
    const auto magic = next("magic number").first;
    static constexpr unsigned char kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    if (magic->kind != Value::Kind::big_integer || magic->s != std::string(reinterpret_cast<const char*>(kMagic), 10))
      throw Error(file + ": the first pickle is not torch's magic number (not a torch.save checkpoint)");
    const auto version = next("protocol version").first;
    if (version->kind != Value::Kind::integer || version->i != 1001)
      throw Error(file + ": protocol version " + (version->kind == Value::Kind::integer ? std::to_string(version->i) : "?") +
                  ", expected 1001");
    const auto info = next("system info").first;
    if (info->kind == Value::Kind::dict)
      for (std::size_t j = 0; j + 1 < info->items.size(); j += 2)
        if (info->items[j]->s == "little_endian" && info->items[j + 1]->i != 1)
          throw Error(file + ": written on a big-endian machine (not supported)");
    std::tie(root, types) = next("object");
    const auto keys = next("storage keys").first;
    if (keys->kind != Value::Kind::list) throw Error(file + ": the storage-key pickle is not a list");
    for (const auto& k : keys->items) {
      if (k->kind != Value::Kind::text) throw Error(file + ": a storage key that is not a string");
      const auto t = types.find(k->s);
      if (t == types.end()) throw Error(file + ": storage " + k->s + " is stored but no tensor uses it");
      if (all.size() - pos < 8) throw Error(file + ": storage " + k->s + " is missing (the file ends at byte " + std::to_string(pos) + ")");
      std::uint64_t n = 0;
      for (int b = 0; b < 8; ++b) n |= static_cast<std::uint64_t>(all[pos + static_cast<std::size_t>(b)]) << (8 * b);
      pos += 8;
      const std::uint64_t room = (all.size() - pos) / dtype_size(t->second);
      if (n > room)
        throw Error(file + ": storage " + k->s + " has " + std::to_string(n) + " elements but the file holds only " +
                    std::to_string(room) + " more (truncated?)");
      data[k->s] = all.subspan(pos, static_cast<std::size_t>(n) * dtype_size(t->second));
      pos += static_cast<std::size_t>(n) * dtype_size(t->second);
    }
    for (const auto& [key, dtype] : types)
      if (!data.count(key)) throw Error(file + ": storage " + key + " is used but not stored");
  } else if (all.size() > 262 && std::memcmp(all.data() + 257, "ustar", 5) == 0) {
    throw Error(file + ": a tar archive (torch < 0.4's format), not supported: load and save it again with a newer torch");
  } else {
    throw Error(file + ": not a PyTorch checkpoint (neither a zip archive nor a pickle with torch's magic number)");
  }
}

/// @p v as JSON (see read_torch_object()). @p budget is what the JSON may still take, in
/// bytes (about 16 per value plus its strings), so that a value the pickle shares many times
/// (memo) cannot expand without bound.
inline nlohmann::json to_json(const Ref& v, const std::string& file, std::uint64_t& budget, int depth) {
  if (depth > 64) throw Error(file + ": values nested more than 64 deep (or an object that contains itself)");
  auto charge = [&](std::uint64_t bytes) {
    if (bytes > budget) throw Error(file + ": the object expands to too much JSON (a value shared many times)");
    budget -= bytes;
  };
  charge(16);
  // A string in the JSON: valid UTF-8 only (what nlohmann can dump).
  auto utf8 = [&](const std::string& s) {
    charge(s.size());
    try {
      (void)unicode::decode_utf8(s);
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  auto bytes = [](std::uint64_t n) { return nlohmann::json{{"__class__", "bytes"}, {"size", n}}; };
  using K = Value::Kind;
  switch (v->kind) {
    case K::none: return nullptr;
    case K::boolean: return v->i != 0;
    case K::integer: return v->i;
    case K::big_integer: return {{"__class__", "int"}, {"bytes", v->s.size()}};  // beyond 64 bits
    case K::real: return v->f;
    case K::text:
      if (!v->bytes && utf8(v->s)) return v->s;
      return bytes(v->s.size());
    case K::tuple:
    case K::list: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& x : v->items) a.push_back(to_json(x, file, budget, depth + 1));
      return a;
    }
    case K::dict: {
      nlohmann::json o = nlohmann::json::object();
      for (std::size_t j = 0; j + 1 < v->items.size(); j += 2) {
        const auto& k = v->items[j];
        const std::string key = k->kind == K::text ? k->s : std::to_string(k->i);
        if (!utf8(key)) throw Error(file + ": a dict key that is not UTF-8");
        o[key] = to_json(v->items[j + 1], file, budget, depth + 1);
      }
      return o;
    }
    case K::global: return {{"__global__", utf8(v->s) ? v->s : std::string("?")}};
    case K::storage: return {{"__class__", "storage"}, {"dtype", std::string(dtype_name(v->dtype))}};
    case K::tensor: return {{"__class__", "torch.Tensor"}, {"dtype", std::string(dtype_name(v->storage->dtype))}, {"shape", v->size}};
    case K::object: break;
  }
  static const std::vector<Ref> none;
  const std::vector<Ref>& args = v->args ? v->args->items : none;
  const bool text_args = std::all_of(args.begin(), args.end(), [](const Ref& a) { return a->kind == K::text; });
  if ((v->s == "pathlib.PosixPath" || v->s == "pathlib.PurePosixPath") && text_args && !v->state) {
    std::filesystem::path p;  // a path pickles as its class and its parts
    for (const auto& a : args) p /= a->s;
    const std::string text = p.empty() ? std::string(".") : p.generic_string();
    if (utf8(text)) return text;
  }
  if (v->s == "torch.device" && !args.empty() && args[0]->kind == K::text && utf8(args[0]->s)) {
    if (args.size() == 1) return args[0]->s;
    if (args.size() == 2 && args[1]->kind == K::integer) return args[0]->s + ":" + std::to_string(args[1]->i);
  }
  if (v->s == "_codecs.encode" && args.size() == 2 && text_args && args[1]->s == "latin1") {
    // Protocol 2 pickles bytes as _codecs.encode(its bytes as latin-1 text, "latin1"): one
    // byte per character, which UTF-8 stores in one or two bytes (count the lead bytes).
    charge(args[0]->s.size());
    std::uint64_t n = 0;
    for (char c : args[0]->s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return bytes(n);
  }
  if ((v->s == "__builtin__.bytes" || v->s == "builtins.bytes") && args.empty() && !v->state) return bytes(0);  // b"", protocol 2
  nlohmann::json o = nlohmann::json::object();
  if (v->state && v->state->kind == K::dict) {
    // An object's attributes (an argparse.Namespace's arguments): its __dict__.
    o = to_json(v->state, file, budget, depth + 1);
  } else if (v->state) {
    o["__state__"] = to_json(v->state, file, budget, depth + 1);
  }
  if (!args.empty()) o["__args__"] = to_json(v->args, file, budget, depth + 1);
  o["__class__"] = utf8(v->s) ? v->s : std::string("?");
  return o;
}

}  // namespace detail::torch_pickle

/// @brief The tensors of a PyTorch checkpoint: a (possibly nested) dict of tensors, as
/// `torch.save(model.state_dict(), path)` writes it (see the file comment for the formats).
///
/// Names are the dict's keys; a nested dict's tensors are named `OUTER.INNER`. Entries that
/// are not tensors (an epoch number, a string) are listed in skipped().
class TorchCheckpoint {
 public:
  /// @brief Read @p path (the file is mapped while it is read; tensors are copied out).
  /// @throws Error naming the file and, for a malformed pickle, the byte and what is wrong
  explicit TorchCheckpoint(const std::filesystem::path& path) : path_(path) {
    namespace tp = detail::torch_pickle;
    const std::string file = path.string();
    tp::Arena arena;
    tp::File f;
    tp::read_file(path, arena, f);
    file_size_ = f.bytes.size();
    format_ = f.format;
    const tp::Ref root = f.root;
    const auto& data = f.data;
    if (root->kind != tp::Value::Kind::dict) throw Error(file + ": the saved object is not a dict (expected a state dict)");
    collect(root, "", data, 0);
    if (names_.empty()) throw Error(file + ": the state dict holds no tensor");
  }

  /// @brief "zip" or "legacy".
  const std::string& format() const noexcept { return format_; }
  /// @brief Tensor names, in the order of the file.
  const std::vector<std::string>& names() const noexcept { return names_; }
  /// @brief Names of the entries that are not tensors (skipped).
  const std::vector<std::string>& skipped() const noexcept { return skipped_; }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
  /// @throws Error when there is no tensor @p name
  const TorchTensor& tensor(std::string_view name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(path_.string() + ": no tensor '" + std::string(name) + "'");
    return it->second;
  }

  /// @brief The file read.
  const std::filesystem::path& path() const noexcept { return path_; }

  /// @brief Write the tensors to the safetensors file @p out, under the same names and element
  /// types, with @p metadata (and `"converted_from"`: this file's name, when it is UTF-8).
  /// @throws Error naming @p out when it cannot be written
  void save_safetensors(const std::filesystem::path& out, std::map<std::string, std::string> metadata = {}) const {
    SafetensorsWriter w;
    for (const auto& name : names()) {
      const TorchTensor& t = tensor(name);
      w.add(name, t.dtype, t.shape, std::span<const std::byte>(t.data));
    }
    try {  // a file name that is not UTF-8 is left out (safetensors metadata is JSON)
      const std::string from = path_.filename().string();
      (void)unicode::decode_utf8(from);
      metadata.try_emplace("converted_from", from);
    } catch (const Error&) {
    }
    for (const auto& [k, v] : metadata) w.set_metadata(k, v);
    w.write(out);
  }

 private:
  void collect(const detail::torch_pickle::Ref& d, const std::string& prefix,
               const std::map<std::string, std::span<const std::byte>>& data, int depth) {
    namespace tp = detail::torch_pickle;
    if (depth > 32) throw Error(path_.string() + ": dicts nested more than 32 deep");
    for (std::size_t j = 0; j + 1 < d->items.size(); j += 2) {
      const auto& k = d->items[j];
      const std::string name = prefix + (k->kind == tp::Value::Kind::text ? k->s : std::to_string(k->i));
      // Names become safetensors (JSON) keys: UTF-8 only (a pickled bytes key may be anything).
      (void)unicode::decode_utf8(name, path_.string() + ": a key of the state dict");
      const auto& v = d->items[j + 1];
      if (v->kind == tp::Value::Kind::dict) {
        collect(v, name + ".", data, depth + 1);
      } else if (v->kind == tp::Value::Kind::tensor) {
        if (tensors_.count(name)) throw Error(path_.string() + ": tensor '" + name + "' appears twice");
        tensors_.emplace(name, materialize(name, *v, data.at(v->storage->key)));
        names_.push_back(name);
      } else {
        skipped_.push_back(name);
      }
    }
  }

  TorchTensor materialize(const std::string& name, const detail::torch_pickle::Value& t, std::span<const std::byte> storage) {
    TorchTensor out;
    out.dtype = t.storage->dtype;
    out.shape = t.size;
    const std::size_t es = dtype_size(out.dtype);
    const std::uint64_t elements = storage.size() / es;
    const std::string what = path_.string() + ": tensor '" + name + "'";
    if (std::find(t.size.begin(), t.size.end(), 0) != t.size.end()) return out;  // no elements
    // Every element inside the storage. (An expanded view, stride 0, has more elements than
    // its storage: all tensors together may take four times the file, plus 64 MiB.)
    const std::uint64_t limit = 4 * file_size_ + (std::uint64_t{1} << 26);
    std::uint64_t count = 1;
    for (std::int64_t n : t.size) {
      if (count > limit / static_cast<std::uint64_t>(n))
        throw Error(what + " has more than " + std::to_string(limit) + " elements (the file has " + std::to_string(file_size_) + " bytes)");
      count *= static_cast<std::uint64_t>(n);
    }
    if (static_cast<std::uint64_t>(t.storage_offset) >= elements)
      throw Error(what + " starts at element " + std::to_string(t.storage_offset) + " of storage " + t.storage->key + ", which has " +
                  std::to_string(elements));
    std::uint64_t room = elements - 1 - static_cast<std::uint64_t>(t.storage_offset);
    for (std::size_t d = 0; d < t.size.size(); ++d) {
      const auto steps = static_cast<std::uint64_t>(t.size[d] - 1), stride = static_cast<std::uint64_t>(t.stride[d]);
      if (steps == 0 || stride == 0) continue;
      if (steps > room / stride)
        throw Error(what + " reaches past the end of storage " + t.storage->key + " (" + std::to_string(elements) + " elements)");
      room -= steps * stride;
    }
    total_bytes_ += count * es;
    if (total_bytes_ > limit)
      throw Error(path_.string() + ": the tensors take more than " + std::to_string(limit) + " bytes, four times the file's " +
                  std::to_string(file_size_) + " plus 64 MiB (expanded views, or views of shared storages)");
    out.data.resize(static_cast<std::size_t>(count) * es);
    // Row-major contiguous (what a state dict almost always holds): one copy.
    bool contiguous = true;
    for (std::size_t d = t.size.size(), expect = 1; d-- > 0;) {
      if (t.size[d] != 1 && static_cast<std::size_t>(t.stride[d]) != expect) contiguous = false;
      expect *= static_cast<std::size_t>(t.size[d]);
    }
    if (contiguous) {
      std::memcpy(out.data.data(), storage.data() + static_cast<std::size_t>(t.storage_offset) * es, out.data.size());
      return out;
    }
    const std::size_t rank = t.size.size();
    std::vector<std::int64_t> idx(rank, 0);
    std::size_t src = static_cast<std::size_t>(t.storage_offset);
    for (std::size_t e = 0; e < count; ++e) {
      std::memcpy(out.data.data() + e * es, storage.data() + src * es, es);
      for (std::size_t d = rank; d-- > 0;) {  // next index, row-major
        src += static_cast<std::size_t>(t.stride[d]);
        if (++idx[d] < t.size[d]) break;
        src -= static_cast<std::size_t>(t.stride[d] * t.size[d]);
        idx[d] = 0;
      }
    }
    return out;
  }

  std::filesystem::path path_;
  std::uint64_t file_size_ = 0, total_bytes_ = 0;
  std::string format_;
  std::vector<std::string> names_, skipped_;
  std::map<std::string, TorchTensor, std::less<>> tensors_;
};

/// @brief Write the tensors of the PyTorch checkpoint @p in to the safetensors file @p out,
/// under the same names and element types, with @p metadata (and `"converted_from"`: the
/// source's file name). Returns what was read (for its names and skipped entries).
/// @throws Error naming the file that could not be read or written
inline TorchCheckpoint convert_torch_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                                std::map<std::string, std::string> metadata = {}) {
  TorchCheckpoint ckpt(in);
  ckpt.save_safetensors(out, std::move(metadata));
  return ckpt;
}

/// @brief Any object saved with `torch.save` (zip or legacy format), as JSON: what a training
/// script saves beside its weights, such as the K-Adapter authors' `training_args.bin` (an
/// `argparse.Namespace` of their command line).
///
/// Nothing is called (the closed interpreter of TorchCheckpoint). None, booleans, integers, floats
/// and strings become JSON values; lists and tuples arrays; dicts objects (integer keys as
/// strings); sets and frozensets arrays. Some objects have a natural value: a `PosixPath` is its
/// string, a `torch.device` its name ("cuda", "cuda:0"). Any other object is a JSON object with
/// `"__class__"` (the class's `module.name`), its attributes when BUILD gave it a dict (so a
/// Namespace's arguments are its fields), `"__state__"` for another state and `"__args__"` for the
/// arguments it was pickled with. A tensor is `{"__class__": "torch.Tensor", "dtype", "shape"}`
/// (its values are not read); bytes (`_codecs.encode(TEXT, "latin1")` under protocol 2), and a
/// string that is not valid UTF-8 (a str with lone surrogates), `{"__class__": "bytes", "size"}`;
/// an integer beyond 64 bits, `{"__class__": "int", "bytes"}`; a class or function itself,
/// `{"__global__": "module.name"}`. NaN and infinities are kept as doubles (nlohmann dumps them as
/// null).
/// @throws Error naming the file for what cannot be read, values nested more than 64 deep (or
/// an object that contains itself), and shared values whose JSON would take more than 64
/// times the file's size plus 64 KiB
inline nlohmann::json read_torch_object(const std::filesystem::path& path) {
  namespace tp = detail::torch_pickle;
  tp::Arena arena;
  tp::File f;
  tp::read_file(path, arena, f);
  std::uint64_t budget = 64 * static_cast<std::uint64_t>(f.bytes.size()) + 65536;
  return tp::to_json(f.root, path.string(), budget, 0);
}

}  // namespace kadapter::io
