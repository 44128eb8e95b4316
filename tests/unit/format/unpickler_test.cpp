// The restricted unpickler (format/unpickler.h) on hand-written pickles
// (protocol 2 opcodes, byte by byte) and on pickles Python writes: plain values
// round-trip, OrderedDict is accepted, memo sharing is kept, and anything that
// could import or execute code, build cycles or nest without bound is refused
// with a CorruptSnapshot naming the file, the offset and what was wrong.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "autosnap/errors.h"
#include "format/unpickler.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using c10::IValue;

// ---- writing pickles by hand ----

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out += static_cast<char>(v);
  return out;
}
std::string le32(uint32_t v) {
  return bytes({int(v & 0xFF), int((v >> 8) & 0xFF), int((v >> 16) & 0xFF), int(v >> 24)});
}

const std::string kProto2 = bytes({0x80, 2});
const std::string kStop = ".";
const std::string kMark = "(";
const std::string kEmptyList = "]";
const std::string kEmptyDict = "}";
const std::string kEmptyTuple = ")";
const std::string kAppend = "a";
const std::string kAppends = "e";
const std::string kSetItems = "u";
const std::string kTuple = "t";
const std::string kTuple1 = bytes({0x85});
const std::string kTuple2 = bytes({0x86});
const std::string kReduce = "R";
const std::string kNone = "N";
const std::string kTrue = bytes({0x88});
const std::string kFalse = bytes({0x89});

std::string int1(int v) { return bytes({'K', v}); }                                  // BININT1: 0..255
std::string str(const std::string& text) { return "X" + le32(text.size()) + text; }  // BINUNICODE
std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string put(int index) { return bytes({'q', index}); }  // BINPUT
std::string get(int index) { return bytes({'h', index}); }  // BINGET
std::string pickle(const std::string& body) { return kProto2 + body + kStop; }

// ---- reading them ----

format::StorageLoader no_storages() {
  return [](const format::StorageRequest& request) -> c10::Storage {
    throw std::runtime_error("unexpected storage request for key " + request.key);
  };
}

IValue unpickle(const std::string& data, const format::StorageLoader& loader = no_storages()) {
  return format::unpickle(data.data(), data.size(), loader, "test.pkl");
}

std::string unpickle_error(const std::string& data) {
  return testing::error_of<CorruptSnapshot>([&] { unpickle(data); });
}

#define EXPECT_ERROR_CONTAINS(data, fragment)                                                   \
  do {                                                                                          \
    const std::string message_ = unpickle_error(data);                                          \
    EXPECT_NE(message_.find(fragment), std::string::npos) << "expected: " << (fragment) << "\n" \
                                                          << "got: " << message_;               \
  } while (0)

// Python's pickle.dumps(eval(expression), protocol=2).
std::string python_pickle(const std::string& expression, const std::string& setup = "") {
  const auto result =
      testing::run_python_code("import sys, pickle, collections\n" + setup +
                                   "\nsys.stdout.write(pickle.dumps(eval(sys.argv[1]), protocol=2).hex())",
                               expression);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::string out;
  for (size_t i = 0; i + 1 < result.output.size(); i += 2) {
    out += static_cast<char>(std::stoi(result.output.substr(i, 2), nullptr, 16));
  }
  return out;
}

const IValue& at(const IValue& dict, const std::string& key) {
  const auto d = dict.toGenericDict();
  auto it = d.find(key);
  if (it == d.end()) throw std::runtime_error("no key '" + key + "' in " + c10::str(dict));
  return it->value();
}

std::vector<std::string> keys_of(const IValue& dict) {
  std::vector<std::string> keys;
  for (const auto& entry : dict.toGenericDict()) keys.push_back(c10::str(entry.key()));
  return keys;
}

// ---- values ----

TEST(Unpickler, Scalars) {
  EXPECT_TRUE(unpickle(pickle(kNone)).isNone());
  EXPECT_EQ(unpickle(pickle(kTrue)), IValue(true));
  EXPECT_EQ(unpickle(pickle(kFalse)), IValue(false));
  EXPECT_EQ(unpickle(pickle(int1(200))).toInt(), 200);
  EXPECT_EQ(unpickle(pickle(bytes({'M', 0x34, 0x12}))).toInt(), 0x1234);                // BININT2
  EXPECT_EQ(unpickle(pickle(bytes({'J', 0xFF, 0xFF, 0xFF, 0xFF}))).toInt(), -1);        // BININT
  EXPECT_EQ(unpickle(pickle(bytes({0x8a, 0}))).toInt(), 0);                             // LONG1, 0 bytes
  EXPECT_EQ(unpickle(pickle(bytes({0x8a, 3, 0x00, 0x00, 0x80}))).toInt(), -(1 << 23));  // sign-extended
  EXPECT_EQ(unpickle(pickle(bytes({0x8a, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}))).toInt(),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(unpickle(pickle(bytes({0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x80}))).toInt(),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(unpickle(pickle(bytes({'G', 0x3F, 0xF8, 0, 0, 0, 0, 0, 0}))).toDouble(), 1.5);  // big endian
  EXPECT_TRUE(std::isinf(unpickle(pickle(bytes({'G', 0xFF, 0xF0, 0, 0, 0, 0, 0, 0}))).toDouble()));
  EXPECT_EQ(unpickle(pickle(str("h\xC3\xA9llo"))).toStringRef(), "h\xC3\xA9llo");
  EXPECT_EQ(unpickle(pickle(bytes({0x8c, 2}) + "ab")).toStringRef(), "ab");  // SHORT_BINUNICODE
  EXPECT_EQ(unpickle(pickle(str(""))).toStringRef(), "");
}

TEST(Unpickler, IntegersWiderThan64BitsAreRefused) {
  EXPECT_ERROR_CONTAINS(pickle(bytes({0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1})), "integer wider than 64 bits");
}

TEST(Unpickler, ListsTuplesAndDicts) {
  const IValue list = unpickle(pickle(kEmptyList + kMark + int1(1) + int1(2) + int1(3) + kAppends));
  ASSERT_TRUE(list.isList()) << list.tagKind();
  EXPECT_EQ(list.toList().size(), 3u);
  EXPECT_EQ(list.toList().get(2).toInt(), 3);
  EXPECT_EQ(unpickle(pickle(kMark + int1(1) + str("a") + "l")).toList().get(1).toStringRef(), "a");  // LIST
  EXPECT_EQ(unpickle(pickle(kEmptyList + kNone + kAppend)).toList().size(), 1u);

  EXPECT_EQ(unpickle(pickle(kEmptyTuple)).toTupleRef().elements().size(), 0u);
  EXPECT_EQ(unpickle(pickle(int1(7) + kTuple1)).toTupleRef().elements()[0].toInt(), 7);
  const IValue triple = unpickle(pickle(int1(1) + str("two") + kNone + bytes({0x87})));
  ASSERT_TRUE(triple.isTuple());
  EXPECT_EQ(triple.toTupleRef().elements()[1].toStringRef(), "two");
  EXPECT_EQ(
      unpickle(pickle(kMark + int1(1) + int1(2) + int1(3) + int1(4) + kTuple)).toTupleRef().elements().size(),
      4u);

  const IValue dict =
      unpickle(pickle(kEmptyDict + kMark + str("b") + int1(1) + str("a") + int1(5) + kTuple1 + kSetItems));
  ASSERT_TRUE(dict.isGenericDict()) << dict.tagKind();
  EXPECT_EQ(keys_of(dict), (std::vector<std::string>{"b", "a"})) << "insertion order is kept";
  EXPECT_EQ(at(dict, "b").toInt(), 1);
  EXPECT_TRUE(at(dict, "a").isTuple());
  const IValue int_keys =
      unpickle(pickle(kMark + int1(0) + str("zero") + int1(1) + str("one") + "d"));  // DICT
  EXPECT_EQ(int_keys.toGenericDict().at(IValue(int64_t(1))).toStringRef(), "one");
  EXPECT_EQ(unpickle(pickle(kEmptyDict + str("k") + kTrue + "s")).toGenericDict().size(), 1u);  // SETITEM
}

TEST(Unpickler, DictKeysOtherThanStrAndIntAreRefused) {
  EXPECT_ERROR_CONTAINS(pickle(kEmptyDict + bytes({'G', 0x3F, 0xF8, 0, 0, 0, 0, 0, 0}) + int1(1) + "s"),
                        "dict key of type Double (only str and int keys are supported)");
}

TEST(Unpickler, WhatPythonPicklesRoundTrips) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  const IValue v = unpickle(python_pickle(
      "{'int': 1, 'neg': -70000, 'big': 2**62, 'min': -2**63, 'float': 0.1, 'str': 'h\\u00e9llo \\u2713', "
      "'none': None, 't': True, 'f': False, 'list': [1, [2, [3]]], 'tuple': (1, 'two', (3.0,)), 'empty': {}, "
      "'empty_list': [], 7: 'int key'}"));
  ASSERT_TRUE(v.isGenericDict()) << v.tagKind();
  EXPECT_EQ(at(v, "int").toInt(), 1);
  EXPECT_EQ(at(v, "neg").toInt(), -70000);
  EXPECT_EQ(at(v, "big").toInt(), int64_t(1) << 62);
  EXPECT_EQ(at(v, "min").toInt(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(at(v, "float").toDouble(), 0.1);
  EXPECT_EQ(at(v, "str").toStringRef(), "h\xC3\xA9llo \xE2\x9C\x93");
  EXPECT_TRUE(at(v, "none").isNone());
  EXPECT_EQ(at(v, "t"), IValue(true));
  EXPECT_EQ(at(v, "f"), IValue(false));
  const IValue nested = at(v, "list");
  EXPECT_EQ(nested.toList().get(1).toList().get(1).toList().get(0).toInt(), 3);
  const auto& tuple = at(v, "tuple").toTupleRef().elements();
  ASSERT_EQ(tuple.size(), 3u);
  EXPECT_EQ(tuple[1].toStringRef(), "two");
  EXPECT_EQ(tuple[2].toTupleRef().elements()[0].toDouble(), 3.0);
  EXPECT_EQ(at(v, "empty").toGenericDict().size(), 0u);
  EXPECT_EQ(at(v, "empty_list").toList().size(), 0u);
  EXPECT_EQ(v.toGenericDict().at(IValue(int64_t(7))).toStringRef(), "int key");
}

TEST(Unpickler, OrderedDictIsAcceptedAsADict) {
  const std::string ordered_dict = global("collections", "OrderedDict");
  // OrderedDict() then SETITEMS, and BUILD with torch's _metadata (dropped).
  const IValue v =
      unpickle(pickle(ordered_dict + kEmptyTuple + kReduce + kMark + str("z") + int1(1) + str("a") + int1(2) +
                      kSetItems + kEmptyDict + str("_metadata") + kEmptyDict + "s" + "b"));
  ASSERT_TRUE(v.isGenericDict()) << v.tagKind();
  EXPECT_EQ(keys_of(v), (std::vector<std::string>{"z", "a"}));
  // OrderedDict([(k, v), ...])
  const IValue from_pairs = unpickle(pickle(ordered_dict + kEmptyList + kMark + str("k") + int1(3) + kTuple2 +
                                            kAppends + kTuple1 + kReduce));
  EXPECT_EQ(at(from_pairs, "k").toInt(), 3);
}

TEST(Unpickler, OrderedDictFromPython) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  const IValue py = unpickle(python_pickle("collections.OrderedDict([('b', 1), ('a', [2])])"));
  EXPECT_EQ(keys_of(py), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(at(py, "a").toList().get(0).toInt(), 2);
}

// ---- what must never load ----

TEST(Unpickler, GlobalsOutsideTheAllowListAreRefusedByName) {
  for (const auto& [module, name] : std::vector<std::pair<std::string, std::string>>{{"os", "system"},
                                                                                     {"__main__", "Secret"},
                                                                                     {"builtins", "eval"},
                                                                                     {"subprocess", "Popen"},
                                                                                     {"torch", "load"}}) {
    const std::string full = module + "." + name;
    EXPECT_ERROR_CONTAINS(pickle(global(module, name)), "refusing to load '" + full + "'");
    // STACK_GLOBAL (protocol 4) names it the same way.
    EXPECT_ERROR_CONTAINS(pickle(str(module) + str(name) + bytes({0x93})), "refusing to load '" + full + "'");
  }
  EXPECT_ERROR_CONTAINS(pickle(global("os", "system") + str("touch /tmp/x") + kTuple1 + kReduce),
                        "arbitrary Python objects are never imported or executed");
}

TEST(Unpickler, APythonObjectIsRefusedNamingItsClass) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  EXPECT_ERROR_CONTAINS(python_pickle("{'x': Secret()}", "class Secret:\n    pass"),
                        "refusing to load '__main__.Secret'");
  EXPECT_ERROR_CONTAINS(python_pickle("{'x': {1, 2}}"),
                        "refusing to load '__builtin__.set'");  // protocol 2's name
}

TEST(Unpickler, ReduceOfAnythingButAKnownCallableIsRefused) {
  EXPECT_ERROR_CONTAINS(pickle(str("os.system") + str("ls") + kTuple1 + kReduce),
                        "REDUCE of something that is not a known global");
  EXPECT_ERROR_CONTAINS(pickle(global("torch", "FloatStorage") + kEmptyTuple + kReduce),
                        "a storage type cannot be called");
  EXPECT_ERROR_CONTAINS(pickle(global("torch", "device") + int1(1) + kTuple1 + kReduce),
                        "torch.device expects a string");
  EXPECT_EQ(unpickle(pickle(global("torch", "device") + str("cpu") + kTuple1 + kReduce)).toDevice(),
            c10::Device("cpu"));
}

// A list nested `depth` deep: [[[...]]].
std::string nested_lists(size_t depth) {
  std::string body(depth, ']');
  body += std::string(depth - 1, 'a');
  return pickle(body);
}

TEST(Unpickler, NestingDeeperThanTheLimitIsRefused) {
  IValue v = unpickle(nested_lists(format::kMaxNesting));
  size_t depth = 1;
  while (v.toList().size() == 1) {
    v = v.toList().get(0);
    ++depth;
  }
  EXPECT_EQ(depth, format::kMaxNesting) << "nesting exactly at the limit loads";
  EXPECT_ERROR_CONTAINS(nested_lists(format::kMaxNesting + 1),
                        "containers nested deeper than " + std::to_string(format::kMaxNesting));
  // Tuples count the same way.
  std::string tuples = kEmptyTuple;
  for (size_t i = 0; i < format::kMaxNesting; ++i) tuples += kTuple1;
  EXPECT_ERROR_CONTAINS(pickle(tuples), "nested deeper than");
}

TEST(Unpickler, CyclesAndLaterChangesToNestedContainersAreRefused) {
  // l = []; l.append(l)
  EXPECT_ERROR_CONTAINS(pickle(kEmptyList + put(0) + get(0) + kAppend), "a container contains itself");
  // a = []; b = [a]; then a.append(1)
  EXPECT_ERROR_CONTAINS(
      pickle(kEmptyList + put(0) + kEmptyList + put(1) + get(0) + kAppend + "0" + int1(1) + kAppend),
      "a container is modified after it was nested");
}

TEST(Unpickler, TruncatedPicklesAreRefusedAtEveryLength) {
  const std::string whole = pickle(kEmptyDict + put(0) + kMark + str("weights") + kEmptyList + put(1) +
                                   kMark + bytes({'G', 0x3F, 0xF8, 0, 0, 0, 0, 0, 0}) +
                                   bytes({'J', 1, 2, 3, 4}) + kAppends + str("epoch") + int1(3) + kSetItems);
  ASSERT_TRUE(unpickle(whole).isGenericDict());
  for (size_t size = 0; size < whole.size(); ++size) {
    const std::string message = unpickle_error(whole.substr(0, size));
    EXPECT_NE(message.find("'test.pkl': data.pkl offset "), std::string::npos) << message;
    EXPECT_NE(message.find("pickle ends in the middle of an opcode (truncated)"), std::string::npos)
        << "cut to " << size << " of " << whole.size() << " bytes: " << message;
  }
  EXPECT_ERROR_CONTAINS(kProto2 + "ctorch\nFloatSto", "GLOBAL name is not terminated");
}

TEST(Unpickler, MalformedStreamsNameTheOffset) {
  EXPECT_ERROR_CONTAINS(bytes({0x80, 6}) + kNone + kStop, "unsupported pickle protocol");
  EXPECT_ERROR_CONTAINS(kProto2 + "i", "'test.pkl': data.pkl offset 2: unsupported pickle opcode 0x69");
  EXPECT_ERROR_CONTAINS(pickle(""), "offset 2: pickle pops from an empty stack");
  EXPECT_ERROR_CONTAINS(pickle(kAppends), "pickle uses a MARK that was never set");
  EXPECT_ERROR_CONTAINS(pickle(global("torch", "FloatStorage")), "the pickle's result is not a value");
  EXPECT_ERROR_CONTAINS(pickle(get(9)), "memo entry 9 was never stored");
}

// ---- the memo ----

TEST(Unpickler, MemoSharingIsKept) {
  // x = [1, 2]; [x, x] with BINPUT/BINGET
  const IValue v = unpickle(pickle(kEmptyList + put(0) + kMark + kEmptyList + put(1) + kMark + int1(1) +
                                   int1(2) + kAppends + get(1) + kAppends));
  ASSERT_EQ(v.toList().size(), 2u);
  EXPECT_TRUE(v.toList().get(0).isSameIdentity(v.toList().get(1))) << "both entries are the same list object";
  EXPECT_EQ(v.toList().get(1).toList().get(1).toInt(), 2);
  // LONG_BINPUT / LONG_BINGET with an index over 255
  const IValue wide = unpickle(pickle(kEmptyDict + "r" + le32(70000) + "j" + le32(70000) + kTuple2));
  EXPECT_TRUE(wide.toTupleRef().elements()[0].isSameIdentity(wide.toTupleRef().elements()[1]));
}

TEST(Unpickler, MemoSharingFromPython) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  const IValue py = unpickle(python_pickle("(lambda d: {'x': d, 'y': [d, d]})({'a': 1})"));
  EXPECT_TRUE(at(py, "x").isSameIdentity(at(py, "y").toList().get(0)));
  EXPECT_TRUE(at(py, "x").isSameIdentity(at(py, "y").toList().get(1)));
  EXPECT_EQ(at(at(py, "x"), "a").toInt(), 1);
}

// ---- tensors, as torch.save writes them ----

// torch._utils._rebuild_tensor_v2(storage("key", FloatStorage, numel 4), offset, size, stride, False,
// OrderedDict())
std::string rebuild_tensor(const std::string& key, int offset, const std::string& size,
                           const std::string& stride) {
  const std::string storage = kMark + str("storage") + global("torch", "FloatStorage") + str(key) +
                              str("cpu") + int1(4) + kTuple + "Q";
  return global("torch._utils", "_rebuild_tensor_v2") + kMark + storage + int1(offset) + size + stride +
         kFalse + global("collections", "OrderedDict") + kEmptyTuple + kReduce + kTuple + kReduce;
}

TEST(Unpickler, TensorsOfOneStorageShareIt) {
  int requests = 0;
  const format::StorageLoader loader = [&](const format::StorageRequest& request) {
    ++requests;
    EXPECT_EQ(request.key, "0");
    EXPECT_EQ(request.dtype, at::kFloat);
    EXPECT_EQ(request.numel, 4u);
    EXPECT_EQ(request.location, "cpu");
    return torch::arange(1, 5, torch::kFloat32).storage();
  };
  const IValue v =
      unpickle(pickle(kEmptyList + kMark +
                      rebuild_tensor("0", 0, int1(2) + int1(2) + kTuple2, int1(2) + int1(1) + kTuple2) +
                      rebuild_tensor("0", 1, int1(3) + kTuple1, int1(1) + kTuple1) + kAppends),
               loader);
  EXPECT_EQ(requests, 1) << "one storage key is loaded once";
  const at::Tensor matrix = v.toList().get(0).toTensor();
  const at::Tensor tail = v.toList().get(1).toTensor();
  EXPECT_TRUE(torch::equal(matrix, torch::tensor({{1.f, 2.f}, {3.f, 4.f}}))) << matrix;
  EXPECT_TRUE(torch::equal(tail, torch::tensor({2.f, 3.f, 4.f}))) << tail;
  EXPECT_TRUE(matrix.storage().is_alias_of(tail.storage()))
      << "views of one storage stay views of one storage";

  const std::string past = testing::error_of<CorruptSnapshot>(
      [&] { unpickle(pickle(rebuild_tensor("0", 2, int1(3) + kTuple1, int1(1) + kTuple1)), loader); });
  EXPECT_NE(past.find("tensor view (offset 2) reaches past its storage of 4 elements"), std::string::npos)
      << past;
}

}  // namespace
}  // namespace autosnap
