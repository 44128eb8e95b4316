#include "daemon/staging.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include "autosnap/errors.h"

namespace autosnap {
namespace daemon {
namespace {

at::Tensor bytes_of(const c10::Storage& storage) {
  at::Tensor t = at::empty({0}, at::TensorOptions().dtype(at::kByte).device(storage.device()));
  t.set_(storage, 0, {static_cast<int64_t>(storage.nbytes())}, {1});
  return t;
}

template <typename F>
void for_each_tensor(const c10::IValue& v, const F& f) {
  if (v.isTensor()) {
    f(v.toTensor());
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) for_each_tensor(e, f);
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) for_each_tensor(e, f);
  } else if (v.isGenericDict()) {
    for (const auto& e : v.toGenericDict()) for_each_tensor(e.value(), f);
  }
}

}  // namespace

void perform_copies(const std::vector<StorageCopy>& copies) {
  for (const auto& copy : copies) {
    if (copy.source.nbytes() == 0) continue;
    if (copy.source.device().is_cpu()) {
      std::memcpy(copy.destination.data_ptr(), copy.source.data(), copy.source.nbytes());
    } else {
      copy.destination.copy_(bytes_of(copy.source));  // device -> pinned host
    }
  }
}

uint64_t storage_bytes(const c10::IValue& value) {
  std::unordered_set<const void*> seen;
  uint64_t total = 0;
  for_each_tensor(value, [&](const at::Tensor& t) {
    if (t.defined() && t.has_storage() && seen.insert(t.storage().unsafeGetStorageImpl()).second) {
      total += t.storage().nbytes();
    }
  });
  return total;
}

c10::IValue StagingArena::stage(const c10::IValue& live, const std::unordered_set<const void*>& step_only,
                                std::vector<StorageCopy>& copies) {
  for (auto& [key, buffer] : buffers_) buffer.used = false;
  staged_storages_.clear();
  step_only_ = &step_only;
  copies_ = &copies;
  c10::IValue staged = stage_value(live, "");
  staged_storages_.clear();
  return staged;
}

c10::IValue StagingArena::stage_value(const c10::IValue& v, const std::string& path) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) return v;
    if (!t.has_storage() || t.layout() != at::kStrided) {
      throw Error("cannot snapshot '" + path + "': only dense tensors can be saved");
    }
    const c10::Storage& storage = t.storage();
    const void* key = storage.unsafeGetStorageImpl();
    auto staged = staged_storages_.find(key);
    if (staged == staged_storages_.end()) {
      // A path can be spelt twice ('/' inside a dict key, "0" as a key and as a
      // list index): each storage of one stage() still gets a buffer of its own.
      std::string buffer_key = path;
      while (buffers_[buffer_key].used) buffer_key += '#';
      Buffer& buffer = buffers_[buffer_key];
      const auto nbytes = static_cast<int64_t>(storage.nbytes());
      if (!buffer.bytes.defined() || buffer.bytes.numel() != nbytes) {
        if (buffer.bytes.defined()) bytes_ -= static_cast<uint64_t>(buffer.bytes.numel());
        auto options = at::TensorOptions().dtype(at::kByte);
        // Pinned host memory makes device-to-host copies fast (CUDA builds only).
        if (storage.device().is_cuda()) options = options.pinned_memory(true);
        buffer.bytes = at::empty({nbytes}, options);
        bytes_ += static_cast<uint64_t>(nbytes);
        ++allocations_;
      }
      buffer.used = true;
      StorageCopy copy{storage, buffer.bytes, step_only_->count(key) > 0};
      if (copy.deferrable && !t.is_inference()) {  // inference tensors have no version counter
        copy.watched = t;
        copy.version = t._version();
        copy.name = path;
      }
      copies_->push_back(std::move(copy));
      staged = staged_storages_.emplace(key, buffer.bytes.storage()).first;
    }
    at::Tensor view = at::empty({0}, at::TensorOptions().dtype(t.scalar_type()));
    view.set_(staged->second, t.storage_offset(), t.sizes(), t.strides());
    return view;
  }
  if (v.isGenericDict()) {
    const auto live = v.toGenericDict();
    c10::impl::GenericDict out(live.keyType(), live.valueType());
    for (const auto& entry : live) {
      const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
      out.insert(entry.key(), stage_value(entry.value(), path.empty() ? key : path + "/" + key));
    }
    return out;
  }
  if (v.isList()) {
    const auto live = v.toList();
    c10::impl::GenericList out(live.elementType());
    for (size_t i = 0; i < live.size(); ++i)
      out.push_back(stage_value(live.get(i), path + "/" + std::to_string(i)));
    return out;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> elements;
    const auto& live = v.toTupleRef().elements();
    for (size_t i = 0; i < live.size(); ++i)
      elements.push_back(stage_value(live[i], path + "/" + std::to_string(i)));
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  return v;  // ints, doubles, strings, ... are values already
}

void StagingArena::trim() {
  for (auto it = buffers_.begin(); it != buffers_.end();) {
    if (it->second.used) {
      ++it;
      continue;
    }
    if (it->second.bytes.defined()) bytes_ -= static_cast<uint64_t>(it->second.bytes.numel());
    it = buffers_.erase(it);
  }
}

void StagingArena::release() {
  buffers_.clear();
  bytes_ = 0;
}

void DeferredCopies::run_or_wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (state_ == State::kPending) {
    state_ = State::kRunning;
    lock.unlock();
    std::exception_ptr error;
    try {
      perform_copies(copies_);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    state_ = State::kDone;
    done_.notify_all();
  }
  done_.wait(lock, [&] { return state_ == State::kDone; });
  if (error_) std::rethrow_exception(error_);
}

std::string DeferredCopies::modified_since_staging() const {
  for (const auto& copy : copies_) {
    if (copy.watched.defined() && copy.watched._version() != copy.version) return copy.name;
  }
  return "";
}

}  // namespace daemon
}  // namespace autosnap
