#include "format/unpickler.h"

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/core/jit_type.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "autosnap/errors.h"

namespace autosnap {
namespace format {
namespace {

using c10::IValue;

// The only globals a pickle may name.
enum class Callable {
  kRebuildTensor,
  kRebuildParameter,
  kRebuildParameterWithState,
  kOrderedDict,
  kBuildList,  // torch.jit._pickle.build_{int,double,bool,tensor}list
  kRestoreTypeTag,
  kDevice,
  kComplex,
  kSize,
  kStorageType,
};

struct GlobalRef {
  Callable callable;
  std::string name;
  at::ScalarType dtype = at::kByte;  // for kStorageType
};

struct StorageRef {
  c10::Storage storage;
  at::ScalarType dtype;
};

struct RawTuple;
// A stack or memo slot: a finished value, or one of the intermediate objects
// a torch.save pickle uses to build tensors.
using Item = std::variant<IValue, GlobalRef, StorageRef, std::shared_ptr<RawTuple>>;
struct RawTuple {
  std::vector<Item> items;
};

const std::unordered_map<std::string, at::ScalarType>& storage_types() {
  static const std::unordered_map<std::string, at::ScalarType> types = {
      {"FloatStorage", at::kFloat},
      {"DoubleStorage", at::kDouble},
      {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16},
      {"ComplexFloatStorage", at::kComplexFloat},
      {"ComplexDoubleStorage", at::kComplexDouble},
      {"BoolStorage", at::kBool},
      {"CharStorage", at::kChar},
      {"ShortStorage", at::kShort},
      {"IntStorage", at::kInt},
      {"LongStorage", at::kLong},
      {"ByteStorage", at::kByte},
      {"UntypedStorage", at::kByte},
  };
  return types;
}

bool is_container(const IValue& v) { return v.isList() || v.isGenericDict() || v.isTuple(); }

class Unpickler {
 public:
  Unpickler(const char* data, size_t size, const StorageLoader& load_storage, const std::string& source)
      : data_(reinterpret_cast<const unsigned char*>(data)),
        size_(size),
        load_storage_(load_storage),
        source_(source) {}

  IValue run() {
    while (true) {
      op_offset_ = pos_;
      const unsigned char op = read_u8();
      switch (op) {
        case 0x80:  // PROTO
          if (read_u8() > 5) fail("unsupported pickle protocol");
          break;
        case 0x95:  // FRAME: only a length hint
          read_bytes(8);
          break;
        case '.': {  // STOP
          Item result = pop();
          auto* value = std::get_if<IValue>(&result);
          if (value == nullptr) fail("the pickle's result is not a value");
          refine_types(*value);
          return *value;
        }
        case '(':  // MARK
          marks_.push_back(stack_.size());
          break;
        case '0':  // POP
          pop();
          break;
        case '1':  // POP_MARK
          pop_mark();
          break;
        case '2':  // DUP
          push(top());
          break;
        case 'N': push(IValue()); break;
        case 0x88:  // NEWTRUE
          push(IValue(true));
          break;
        case 0x89:  // NEWFALSE
          push(IValue(false));
          break;
        case 'J': {  // BININT
          int32_t v;
          std::memcpy(&v, read_bytes(4), 4);
          push(IValue(static_cast<int64_t>(v)));
          break;
        }
        case 'K':  // BININT1
          push(IValue(static_cast<int64_t>(read_u8())));
          break;
        case 'M': {  // BININT2
          const unsigned char* p = read_bytes(2);
          push(IValue(static_cast<int64_t>(p[0] | (p[1] << 8))));
          break;
        }
        case 0x8a:  // LONG1
          push(IValue(read_long(read_u8())));
          break;
        case 0x8b:  // LONG4
          push(IValue(read_long(read_u32())));
          break;
        case 'G': {  // BINFLOAT, big endian
          const unsigned char* p = read_bytes(8);
          unsigned char le[8];
          for (int i = 0; i < 8; ++i) le[i] = p[7 - i];
          double d;
          std::memcpy(&d, le, 8);
          push(IValue(d));
          break;
        }
        case 'X':  // BINUNICODE
          push(IValue(read_string(read_u32())));
          break;
        case 0x8c:  // SHORT_BINUNICODE
          push(IValue(read_string(read_u8())));
          break;
        case 0x8d:  // BINUNICODE8
          push(IValue(read_string(read_u64())));
          break;
        case ']':  // EMPTY_LIST
          push(IValue(c10::impl::GenericList(c10::AnyType::get())));
          break;
        case 'l': {  // LIST
          auto items = pop_mark();
          c10::impl::GenericList list(c10::AnyType::get());
          IValue value(list);
          for (auto& item : items) append_to(value, std::move(item));
          push(std::move(value));
          break;
        }
        case 'a': {  // APPEND
          Item item = pop();
          append_to(top_value("APPEND"), std::move(item));
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark();
          IValue& list = top_value("APPENDS");
          for (auto& item : items) append_to(list, std::move(item));
          break;
        }
        case ')':  // EMPTY_TUPLE
          push(make_tuple({}));
          break;
        case 't':  // TUPLE
          push(make_tuple(pop_mark()));
          break;
        case 0x85:    // TUPLE1
        case 0x86:    // TUPLE2
        case 0x87: {  // TUPLE3
          const size_t n = op - 0x84;
          if (stack_.size() < n + stack_floor()) fail("tuple needs more items than the stack holds");
          std::vector<Item> items(std::make_move_iterator(stack_.end() - n),
                                  std::make_move_iterator(stack_.end()));
          stack_.resize(stack_.size() - n);
          push(make_tuple(std::move(items)));
          break;
        }
        case '}':  // EMPTY_DICT
          push(IValue(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get())));
          break;
        case 'd': {  // DICT
          auto items = pop_mark();
          IValue dict(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
          set_items(dict, items);
          push(std::move(dict));
          break;
        }
        case 's': {  // SETITEM
          Item value = pop();
          Item key = pop();
          std::vector<Item> pair;
          pair.push_back(std::move(key));
          pair.push_back(std::move(value));
          set_items(top_value("SETITEM"), pair);
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark();
          set_items(top_value("SETITEMS"), items);
          break;
        }
        case 'q':  // BINPUT
          memo_put(read_u8());
          break;
        case 'r':  // LONG_BINPUT
          memo_put(read_u32());
          break;
        case 0x94:  // MEMOIZE
          memo_put(static_cast<uint32_t>(memo_.size()));
          break;
        case 'h':  // BINGET
          memo_get(read_u8());
          break;
        case 'j':  // LONG_BINGET
          memo_get(read_u32());
          break;
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = read_line();
          std::string name = read_line();
          push(resolve_global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Item name = pop();
          Item module = pop();
          auto* n = std::get_if<IValue>(&name);
          auto* m = std::get_if<IValue>(&module);
          if (!n || !m || !n->isString() || !m->isString()) fail("STACK_GLOBAL needs two strings");
          push(resolve_global(m->toStringRef(), n->toStringRef()));
          break;
        }
        case 'R': {  // REDUCE
          Item args = pop();
          Item callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b': {  // BUILD: only OrderedDict's instance state (_metadata), which is dropped
          Item state = pop();
          auto* target = std::get_if<IValue>(&top());
          auto* state_value = std::get_if<IValue>(&state);
          if (!target || !target->isGenericDict() || !state_value ||
              !(state_value->isGenericDict() || state_value->isNone())) {
            fail("BUILD is only supported for OrderedDict state");
          }
          break;
        }
        case 'Q':  // BINPERSID
          push(persistent_load(pop()));
          break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + hex);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw CorruptSnapshot("'" + source_ + "': data.pkl offset " + std::to_string(op_offset_) + ": " + what);
  }

  // ---- reading the byte stream ----
  const unsigned char* read_bytes(uint64_t n) {
    if (n > size_ - pos_) fail("pickle ends in the middle of an opcode (truncated)");
    const unsigned char* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  uint8_t read_u8() { return *read_bytes(1); }
  uint32_t read_u32() {
    const unsigned char* p = read_bytes(4);
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  }
  uint64_t read_u64() {
    uint64_t lo = read_u32();
    uint64_t hi = read_u32();
    return lo | (hi << 32);
  }
  std::string read_string(uint64_t n) {
    const unsigned char* p = read_bytes(n);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  std::string read_line() {
    const void* nl = std::memchr(data_ + pos_, '\n', std::min<size_t>(size_ - pos_, 256));
    if (nl == nullptr) fail("GLOBAL name is not terminated");
    size_t n = static_cast<const unsigned char*>(nl) - (data_ + pos_);
    std::string s = read_string(n);
    pos_ += 1;
    return s;
  }
  int64_t read_long(uint64_t n) {
    if (n > 8) fail("integer wider than 64 bits");
    const unsigned char* p = read_bytes(n);
    if (n == 0) return 0;
    uint64_t v = 0;
    for (uint64_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    if (n < 8 && (p[n - 1] & 0x80)) v |= ~0ull << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }

  // ---- the stack ----
  size_t stack_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Item item) { stack_.push_back(std::move(item)); }
  Item pop() {
    if (stack_.size() <= stack_floor()) fail("pickle pops from an empty stack");
    Item item = std::move(stack_.back());
    stack_.pop_back();
    return item;
  }
  Item& top() {
    if (stack_.size() <= stack_floor()) fail("pickle reads from an empty stack");
    return stack_.back();
  }
  IValue& top_value(const char* opcode) {
    auto* value = std::get_if<IValue>(&top());
    if (value == nullptr) fail(std::string(opcode) + " target is not a container");
    return *value;
  }
  std::vector<Item> pop_mark() {
    if (marks_.empty()) fail("pickle uses a MARK that was never set");
    size_t mark = marks_.back();
    marks_.pop_back();
    if (mark > stack_.size()) fail("MARK points past the stack");
    std::vector<Item> items(std::make_move_iterator(stack_.begin() + mark),
                            std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }

  // ---- the memo ----
  void memo_put(uint32_t index) {
    if (memo_.size() >= kMaxMemo && !memo_.count(index)) fail("too many memo entries");
    memo_[index] = top();
  }
  void memo_get(uint32_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    push(it->second);
  }

  // ---- containers: sealed once nested, so no cycles and bounded depth ----
  IValue value_of(Item item, const char* where) {
    auto* value = std::get_if<IValue>(&item);
    if (value == nullptr) fail(std::string("unsupported object inside a ") + where);
    return std::move(*value);
  }
  size_t height(const IValue& v) const {
    if (!is_container(v)) return 0;
    auto it = heights_.find(v.internalToPointer());
    return it == heights_.end() ? 1 : it->second;
  }
  // Records that `child` now lives inside `parent`.
  void adopt(const IValue& parent, const IValue& child) {
    if (!is_container(child)) return;
    if (child.internalToPointer() == parent.internalToPointer()) fail("a container contains itself");
    // Pointers identify objects only while they live: keep both alive until the end.
    keep_alive_.push_back(child);
    sealed_.insert(child.internalToPointer());
    size_t h = height(child) + 1;
    if (h > kMaxNesting) fail("containers nested deeper than " + std::to_string(kMaxNesting));
    auto [it, inserted] = heights_.try_emplace(parent.internalToPointer(), 1);
    if (inserted) keep_alive_.push_back(parent);
    it->second = std::max(it->second, h);
  }
  void check_mutable(const IValue& container) {
    if (sealed_.count(container.internalToPointer())) {
      fail("a container is modified after it was nested (cyclic data is not supported)");
    }
  }
  void append_to(IValue& list, Item item) {
    if (!list.isList()) fail("APPEND target is not a list");
    check_mutable(list);
    IValue value = value_of(std::move(item), "list");
    adopt(list, value);
    list.toList().push_back(std::move(value));
  }
  void set_items(IValue& dict, std::vector<Item>& items) {
    if (!dict.isGenericDict()) fail("SETITEM target is not a dict");
    if (items.size() % 2 != 0) fail("SETITEMS has an odd number of items");
    check_mutable(dict);
    auto d = dict.toGenericDict();
    for (size_t i = 0; i < items.size(); i += 2) {
      IValue key = value_of(std::move(items[i]), "dict key");
      if (!key.isString() && !key.isInt()) {
        fail(std::string("dict key of type ") + key.tagKind() + " (only str and int keys are supported)");
      }
      IValue value = value_of(std::move(items[i + 1]), "dict");
      adopt(dict, value);
      d.insert_or_assign(std::move(key), std::move(value));
    }
  }
  Item make_tuple(std::vector<Item> items) {
    bool all_values = true;
    for (const auto& item : items) all_values = all_values && std::holds_alternative<IValue>(item);
    if (!all_values) {
      auto raw = std::make_shared<RawTuple>();
      raw->items = std::move(items);
      return raw;
    }
    std::vector<IValue> values;
    values.reserve(items.size());
    for (auto& item : items) values.push_back(std::get<IValue>(std::move(item)));
    auto tuple = c10::ivalue::Tuple::create(std::move(values));
    IValue result(tuple);
    for (const auto& element : tuple->elements()) adopt(result, element);
    return result;
  }
  std::vector<Item> tuple_items(Item& args, const std::string& what) {
    if (auto* raw = std::get_if<std::shared_ptr<RawTuple>>(&args)) return (*raw)->items;
    auto* value = std::get_if<IValue>(&args);
    if (value == nullptr || !value->isTuple()) fail(what + " expects a tuple of arguments");
    std::vector<Item> items;
    for (const auto& element : value->toTupleRef().elements()) items.emplace_back(element);
    return items;
  }

  // ---- globals, REDUCE and persistent ids ----
  Item resolve_global(const std::string& module, const std::string& name) {
    static const std::unordered_map<std::string, Callable> known = {
        {"torch._utils._rebuild_tensor_v2", Callable::kRebuildTensor},
        {"torch._utils._rebuild_parameter", Callable::kRebuildParameter},
        {"torch._utils._rebuild_parameter_with_state", Callable::kRebuildParameterWithState},
        {"collections.OrderedDict", Callable::kOrderedDict},
        {"torch.jit._pickle.build_intlist", Callable::kBuildList},
        {"torch.jit._pickle.build_doublelist", Callable::kBuildList},
        {"torch.jit._pickle.build_boollist", Callable::kBuildList},
        {"torch.jit._pickle.build_tensorlist", Callable::kBuildList},
        {"torch.jit._pickle.restore_type_tag", Callable::kRestoreTypeTag},
        {"torch.device", Callable::kDevice},
        {"builtins.complex", Callable::kComplex},
        {"torch.Size", Callable::kSize},
    };
    const std::string full = module + "." + name;
    auto it = known.find(full);
    if (it != known.end()) return GlobalRef{it->second, full};
    if (module == "torch" || module == "torch.storage") {
      auto st = storage_types().find(name);
      if (st != storage_types().end()) return GlobalRef{Callable::kStorageType, full, st->second};
    }
    fail("refusing to load '" + full +
         "': only tensors, lists, tuples, dicts, None, bool, int, float and str can be loaded "
         "(arbitrary Python objects are never imported or executed)");
  }

  Item reduce(Item& callable_item, Item& args_item) {
    auto* global = std::get_if<GlobalRef>(&callable_item);
    if (global == nullptr) fail("REDUCE of something that is not a known global");
    std::vector<Item> args = tuple_items(args_item, global->name);
    auto arg_value = [&](size_t i) -> IValue& {
      if (i >= args.size()) fail(global->name + " called with too few arguments");
      auto* v = std::get_if<IValue>(&args[i]);
      if (v == nullptr) fail(global->name + " argument " + std::to_string(i) + " has the wrong type");
      return *v;
    };
    switch (global->callable) {
      case Callable::kRebuildTensor:
        if (args.size() != 6 && args.size() != 7) fail("_rebuild_tensor_v2 expects 6 or 7 arguments");
        return rebuild_tensor(args);
      case Callable::kRebuildParameter:
      case Callable::kRebuildParameterWithState: {
        IValue& data = arg_value(0);
        IValue& requires_grad = arg_value(1);
        if (!data.isTensor() || !requires_grad.isBool()) fail("malformed _rebuild_parameter call");
        at::Tensor t = data.toTensor();
        if (requires_grad.toBool() && (t.is_floating_point() || t.is_complex())) t.set_requires_grad(true);
        return IValue(t);
      }
      case Callable::kOrderedDict: {
        IValue dict(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
        if (!args.empty()) {  // OrderedDict([(k, v), ...])
          IValue& pairs = arg_value(0);
          if (!pairs.isList()) fail("OrderedDict expects a list of pairs");
          std::vector<Item> flat;
          for (const IValue& pair : pairs.toListRef()) {
            if (!pair.isTuple() || pair.toTupleRef().elements().size() != 2) {
              fail("OrderedDict expects (key, value) pairs");
            }
            flat.emplace_back(pair.toTupleRef().elements()[0]);
            flat.emplace_back(pair.toTupleRef().elements()[1]);
          }
          set_items(dict, flat);
        }
        return dict;
      }
      case Callable::kBuildList: {
        IValue& list = arg_value(0);
        if (!list.isList()) fail(global->name + " expects a list");
        return list;
      }
      case Callable::kRestoreTypeTag: return arg_value(0);
      case Callable::kDevice: {
        IValue& type = arg_value(0);
        if (!type.isString()) fail("torch.device expects a string");
        std::string spec = type.toStringRef();
        if (args.size() > 1 && arg_value(1).isInt()) spec += ":" + std::to_string(arg_value(1).toInt());
        try {
          return IValue(c10::Device(spec));
        } catch (const c10::Error&) {
          fail("invalid device '" + spec + "'");
        }
      }
      case Callable::kComplex: {
        double re = args.size() > 0 ? number(arg_value(0)) : 0.0;
        double im = args.size() > 1 ? number(arg_value(1)) : 0.0;
        return IValue(c10::complex<double>(re, im));
      }
      case Callable::kSize: {
        IValue& dims = arg_value(0);
        if (!dims.isTuple()) fail("torch.Size expects a tuple");
        return dims;
      }
      case Callable::kStorageType: fail("a storage type cannot be called");
    }
    fail("unreachable");
  }

  double number(const IValue& v) {
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    fail("expected a number");
  }

  std::vector<int64_t> int_tuple(const IValue& v, const char* what) {
    if (!v.isTuple()) fail(std::string("tensor ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& e : v.toTupleRef().elements()) {
      if (!e.isInt() || e.toInt() < 0)
        fail(std::string("tensor ") + what + " holds a negative or non-integer entry");
      out.push_back(e.toInt());
    }
    return out;
  }

  Item rebuild_tensor(std::vector<Item>& args) {
    auto* storage = std::get_if<StorageRef>(&args[0]);
    if (storage == nullptr) fail("_rebuild_tensor_v2's first argument is not a storage");
    auto* offset = std::get_if<IValue>(&args[1]);
    auto* size = std::get_if<IValue>(&args[2]);
    auto* stride = std::get_if<IValue>(&args[3]);
    auto* requires_grad = std::get_if<IValue>(&args[4]);
    if (!offset || !size || !stride || !requires_grad || !offset->isInt() || offset->toInt() < 0 ||
        !requires_grad->isBool()) {
      fail("malformed _rebuild_tensor_v2 arguments");
    }
    std::vector<int64_t> sizes = int_tuple(*size, "size");
    std::vector<int64_t> strides = int_tuple(*stride, "stride");
    if (sizes.size() != strides.size() || sizes.size() > 64) fail("tensor size and stride do not match");
    const size_t element_size = c10::elementSize(storage->dtype);
    const unsigned __int128 storage_numel = storage->storage.nbytes() / element_size;
    unsigned __int128 last = static_cast<uint64_t>(offset->toInt());
    bool empty = false;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) empty = true;
      last +=
          static_cast<unsigned __int128>(sizes[i] > 0 ? sizes[i] - 1 : 0) * static_cast<uint64_t>(strides[i]);
    }
    if (empty ? static_cast<unsigned __int128>(offset->toInt()) > storage_numel : last >= storage_numel) {
      fail("tensor view (offset " + std::to_string(offset->toInt()) + ") reaches past its storage of " +
           std::to_string(static_cast<uint64_t>(storage_numel)) + " elements");
    }
    try {
      at::Tensor t =
          at::empty({0}, at::TensorOptions().dtype(storage->dtype).device(storage->storage.device()));
      t.set_(storage->storage, offset->toInt(), sizes, strides);
      if (requires_grad->toBool() && (t.is_floating_point() || t.is_complex())) t.set_requires_grad(true);
      return IValue(t);
    } catch (const c10::Error& e) {
      fail(std::string("cannot rebuild tensor: ") + e.what_without_backtrace());
    }
  }

  Item persistent_load(Item pid) {
    std::vector<Item> fields = tuple_items(pid, "persistent id");
    if (fields.size() != 5) fail("persistent id is not ('storage', type, key, location, numel)");
    auto* tag = std::get_if<IValue>(&fields[0]);
    auto* type = std::get_if<GlobalRef>(&fields[1]);
    auto* key = std::get_if<IValue>(&fields[2]);
    auto* location = std::get_if<IValue>(&fields[3]);
    auto* numel = std::get_if<IValue>(&fields[4]);
    if (!tag || !tag->isString() || tag->toStringRef() != "storage" || !type ||
        type->callable != Callable::kStorageType || !key || !key->isString() || !location ||
        !location->isString() || !numel || !numel->isInt() || numel->toInt() < 0) {
      fail("malformed storage persistent id");
    }
    const std::string& k = key->toStringRef();
    auto cached = storages_.find(k);
    if (cached != storages_.end()) return StorageRef{cached->second, type->dtype};
    StorageRequest request{k, type->dtype, static_cast<uint64_t>(numel->toInt()), location->toStringRef()};
    c10::Storage storage = load_storage_(request);
    storages_.emplace(k, storage);
    return StorageRef{storage, type->dtype};
  }

  // Gives loaded containers precise element types (Dict[str, Tensor],
  // List[int], ...) so typed LibTorch accessors work on them.
  void refine_types(const IValue& root) {
    std::unordered_set<const void*> seen;
    std::vector<std::pair<IValue, bool>> work{{root, false}};
    while (!work.empty()) {
      auto [v, children_done] = work.back();
      work.pop_back();
      if (!is_container(v) || (!children_done && !seen.insert(v.internalToPointer()).second)) continue;
      if (!children_done) {
        work.emplace_back(v, true);
        if (v.isList()) {
          for (const IValue& e : v.toListRef()) work.emplace_back(e, false);
        } else if (v.isGenericDict()) {
          for (const auto& entry : v.toGenericDict()) work.emplace_back(entry.value(), false);
        } else {
          for (const IValue& e : v.toTupleRef().elements()) work.emplace_back(e, false);
        }
        continue;
      }
      if (v.isList()) {
        auto list = v.toList();
        std::vector<IValue> elements(list.begin(), list.end());
        list.unsafeSetElementType(common_type(elements, c10::AnyType::get()));
      } else if (v.isGenericDict()) {
        auto dict = v.toGenericDict();
        std::vector<IValue> keys, values;
        for (const auto& entry : dict) {
          keys.push_back(entry.key());
          values.push_back(entry.value());
        }
        dict.unsafeSetKeyType(common_type(keys, c10::StringType::get()));
        dict.unsafeSetValueType(common_type(values, c10::AnyType::get()));
      }
    }
  }

  static c10::TypePtr common_type(const std::vector<IValue>& values, const c10::TypePtr& if_empty) {
    if (values.empty()) return if_empty;
    auto all = [&](bool (IValue::*is)() const) {
      for (const auto& v : values) {
        if (!(v.*is)()) return false;
      }
      return true;
    };
    if (all(&IValue::isTensor)) return c10::TensorType::get();
    if (all(&IValue::isString)) return c10::StringType::get();
    if (all(&IValue::isInt)) return c10::IntType::get();
    if (all(&IValue::isDouble)) return c10::FloatType::get();
    if (all(&IValue::isBool)) return c10::BoolType::get();
    return c10::AnyType::get();
  }

  static constexpr size_t kMaxMemo = 1u << 24;

  const unsigned char* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  const StorageLoader& load_storage_;
  const std::string& source_;
  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Item> memo_;
  std::unordered_map<std::string, c10::Storage> storages_;
  std::unordered_set<const void*> sealed_;
  std::unordered_map<const void*, size_t> heights_;
  std::vector<IValue> keep_alive_;
};

}  // namespace

c10::IValue unpickle(const char* data, size_t size, const StorageLoader& load_storage,
                     const std::string& source) {
  return Unpickler(data, size, load_storage, source).run();
}

}  // namespace format
}  // namespace autosnap
