#include <ATen/core/Dict.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include "autosnap/errors.h"
#include "format/shard.h"
#include "format/zip_writer.h"

namespace autosnap {
namespace format {
namespace {

void check_tensor(const at::Tensor& t, const std::string& where) {
  auto refuse = [&](const std::string& why) { throw Error("cannot save " + where + ": " + why); };
  if (!t.defined()) refuse("undefined tensor");
  if (t.is_sparse() || t.layout() != at::kStrided) refuse("only dense (strided) tensors can be saved");
  if (t.is_quantized()) refuse("quantized tensors are not supported");
  if (t.is_nested()) refuse("nested tensors are not supported");
  if (t.is_conj() || t.is_neg())
    refuse("tensor has a lazy conj/neg bit; call resolve_conj()/resolve_neg() first");
  if (!t.has_storage()) refuse("tensor has no storage");
}

// Adds the bytes of the tensors' storages to `bytes`.
void check_value(const c10::IValue& v, const std::string& where, size_t depth, uint64_t& bytes) {
  if (depth > 1000) throw Error("cannot save " + where + ": containers nested deeper than 1000");
  if (v.isTensor()) {
    check_tensor(v.toTensor(), where);
    bytes += v.toTensor().storage().nbytes();
  } else if (v.isList()) {
    size_t i = 0;
    for (const auto& e : v.toListRef()) {
      check_value(e, where + "[" + std::to_string(i++) + "]", depth + 1, bytes);
    }
  } else if (v.isTuple()) {
    size_t i = 0;
    for (const auto& e : v.toTupleRef().elements()) {
      check_value(e, where + "[" + std::to_string(i++) + "]", depth + 1, bytes);
    }
  } else if (v.isGenericDict()) {
    for (const auto& entry : v.toGenericDict()) {
      const auto& key = entry.key();
      if (!key.isString() && !key.isInt()) {
        throw Error("cannot save " + where + ": dict key of type " + key.tagKind() +
                    " (only str and int keys are supported)");
      }
      std::string sub = key.isString() ? where + "['" + key.toStringRef() + "']"
                                       : where + "[" + std::to_string(key.toInt()) + "]";
      check_value(entry.value(), sub, depth + 1, bytes);
    }
  } else if (!is_plain_value(v)) {
    throw Error("cannot save " + where + ": values of type " + v.tagKind() +
                " are not supported (save tensors, lists, tuples, dicts, None, bool, int, "
                "float and str; for modules save their state_dict)");
  }
}

bool is_specialized_list(const c10::IValue& v) {
  return v.isIntList() || v.isDoubleList() || v.isBoolList() || v.isTensorList();
}

// LibTorch's Pickler writes typed lists (List[int], List[Tensor], ...) as
// calls to torch.jit._pickle.build_intlist & co., which PyTorch >= 2.6's
// default torch.load (weights_only=True) refuses. Plain lists load
// everywhere, so typed lists are written as plain ones; containers without
// any are passed through untouched (keeping their identity).
c10::IValue with_plain_lists(const c10::IValue& v) {
  if (v.isList()) {
    const auto list = v.toList();
    std::vector<c10::IValue> items;
    bool changed = is_specialized_list(v);
    for (const auto& item : list) {
      items.push_back(with_plain_lists(item));
      changed = changed || !items.back().isSameIdentity(item);
    }
    if (!changed) return v;
    c10::impl::GenericList plain(c10::AnyType::get());
    for (auto& item : items) plain.push_back(std::move(item));
    return plain;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    bool changed = false;
    for (const auto& item : v.toTupleRef().elements()) {
      items.push_back(with_plain_lists(item));
      changed = changed || !items.back().isSameIdentity(item);
    }
    return changed ? c10::IValue(c10::ivalue::Tuple::create(std::move(items))) : v;
  }
  if (v.isGenericDict()) {
    const auto dict = v.toGenericDict();
    std::vector<std::pair<c10::IValue, c10::IValue>> items;
    bool changed = false;
    for (const auto& entry : dict) {
      items.emplace_back(entry.key(), with_plain_lists(entry.value()));
      changed = changed || !items.back().second.isSameIdentity(entry.value());
    }
    if (!changed) return v;
    c10::impl::GenericDict copy(dict.keyType(), c10::AnyType::get());
    for (auto& [key, value] : items) copy.insert(key, std::move(value));
    return copy;
  }
  return v;
}

}  // namespace

bool is_plain_value(const c10::IValue& v) {
  return v.isNone() || v.isBool() || v.isInt() || v.isDouble() || v.isString() || v.isComplexDouble() ||
         v.isDevice();
}

uint64_t check_saveable(const c10::IValue& value) {
  uint64_t bytes = 0;
  check_value(value, "value", 0, bytes);
  return bytes;
}

void write_shard(const c10::IValue& value, WritableFile& out) {
  out.expect_size(check_saveable(value));

  // The pickle holds only structure (tensor data goes to separate records),
  // but with thousands of tensors that is megabytes: it goes into its record
  // as it is made, in pieces of up to kPiece bytes, not kept whole in memory.
  constexpr size_t kPiece = 64 << 10;
  ZipWriter zip(out);
  zip.begin_record("data.pkl");
  std::string piece;
  piece.reserve(kPiece);
  torch::jit::Pickler pickler(
      [&](const char* data, size_t size) {
        if (piece.size() + size > kPiece) {
          zip.append_to_record(piece.data(), piece.size());
          piece.clear();
        }
        piece.append(data, size);
      },
      /*tensor_table=*/nullptr, /*type_renamer=*/nullptr,
      /*memoized_class_types=*/nullptr, /*get_tensor_id=*/nullptr,
      /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(with_plain_lists(value));
  pickler.stop();
  zip.append_to_record(piece.data(), piece.size());
  zip.end_record();

  const auto& tensors = pickler.tensorData();
  zip.expect_records(tensors.size() + 2);  // and data.pkl, version
  for (size_t i = 0; i < tensors.size(); ++i) {
    // Copies to host only for non-CPU tensors; CPU storages are written in place.
    auto data = torch::jit::getWriteableTensorData(tensors[i]);
    zip.add_record("data/" + std::to_string(i), data.data(), data.sizeInBytes());
  }
  zip.finish();
}

}  // namespace format
}  // namespace autosnap
