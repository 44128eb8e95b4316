#include "daemon/staging.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

#include "autosnap/errors.h"

namespace autosnap {
namespace daemon {
namespace {

constexpr size_t kMaxCopyThreads = 4;
constexpr size_t kMinBytesPerCopyThread = 32 << 20;  // below this a thread costs more than it saves

at::Tensor bytes_of(const c10::Storage& storage) {
  at::Tensor t = at::empty({0}, at::TensorOptions().dtype(at::kByte).device(storage.device()));
  t.set_(storage, 0, {static_cast<int64_t>(storage.nbytes())}, {1});
  return t;
}

// A tensor like `like` (dtype, offset, sizes, strides) on `storage`, built
// directly: at::empty + set_ cost two dispatcher calls per tensor, which
// dominated staging a state of thousands of small tensors.
at::Tensor view_into(const c10::Storage& storage, const at::Tensor& like) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::Storage(storage),
                                                   c10::DispatchKeySet(c10::DispatchKey::CPU), like.dtype());
  impl->set_sizes_and_strides(like.sizes(), like.strides());
  impl->set_storage_offset(like.storage_offset());
  return at::Tensor(std::move(impl));
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
  // Host copies, cut into pieces that the threads share: one core's memcpy is
  // well below what the memory can do, and the training thread waits for it.
  struct Piece {
    char* destination;
    const char* source;
    size_t size;
  };
  constexpr size_t kPiece = 4 << 20;
  std::vector<Piece> pieces;
  size_t total = 0;
  std::exception_ptr error;  // the copies before a failing one are still made
  try {
    for (const auto& copy : copies) {
      const size_t size = copy.source.nbytes();
      if (size == 0) continue;
      if (!copy.source.device().is_cpu()) {
        copy.destination.copy_(bytes_of(copy.source));  // device -> pinned host
        continue;
      }
      auto* destination = static_cast<char*>(copy.destination.data_ptr());
      const auto* source = static_cast<const char*>(copy.source.data());
      for (size_t done = 0; done < size; done += kPiece) {
        pieces.push_back({destination + done, source + done, std::min(kPiece, size - done)});
      }
      total += size;
    }
  } catch (...) {
    error = std::current_exception();
  }
  const size_t threads = std::min<size_t>({kMaxCopyThreads, std::max(1u, std::thread::hardware_concurrency()),
                                           total / kMinBytesPerCopyThread + 1});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < pieces.size(); i = next++) {
      std::memcpy(pieces[i].destination, pieces[i].source, pieces[i].size);
    }
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& helper : helpers) helper.join();
  if (error) std::rethrow_exception(error);
}

uint64_t storage_bytes(const c10::IValue& value) {
  // A sorted vector, not a hash set: thousands of tensors are counted on the training thread.
  std::vector<std::pair<const void*, uint64_t>> storages;
  for_each_tensor(value, [&](const at::Tensor& t) {
    if (t.defined() && t.has_storage()) {
      storages.emplace_back(t.storage().unsafeGetStorageImpl(), t.storage().nbytes());
    }
  });
  std::sort(storages.begin(), storages.end());
  uint64_t total = 0;
  for (size_t i = 0; i < storages.size(); ++i) {
    if (i == 0 || storages[i].first != storages[i - 1].first) total += storages[i].second;
  }
  return total;
}

// A dict key or a list index, linked to its parent's: the path of a value
// costs nothing until a message asks for it.
struct StagingArena::PathLink {
  const PathLink* parent;
  const c10::IValue* key;  // nullptr for a list or tuple element
  size_t index;

  std::string spelt() const {
    const std::string above = parent ? parent->spelt() : "";
    if (!key) return above + "/" + std::to_string(index);
    const std::string name = key->isString() ? key->toStringRef() : c10::str(*key);
    return above.empty() ? name : above + "/" + name;
  }
};

c10::IValue StagingArena::stage(const c10::IValue& live, const std::unordered_set<const void*>& step_only,
                                std::vector<StorageCopy>& copies) {
  used_ = 0;
  staged_storages_.clear();
  staged_storages_.reserve(buffers_.size());
  step_only_ = &step_only;
  copies_ = &copies;
  c10::IValue staged = stage_value(live, nullptr);
  staged_storages_.clear();
  return staged;
}

c10::IValue StagingArena::stage_tensor(const at::Tensor& t, const PathLink* path) {
  if (!t.defined()) return t;
  if (!t.has_storage() || t.layout() != at::kStrided) {
    throw Error("cannot snapshot '" + (path ? path->spelt() : "") + "': only dense tensors can be saved");
  }
  const c10::Storage& storage = t.storage();
  const void* key = storage.unsafeGetStorageImpl();
  auto staged = staged_storages_.find(key);
  if (staged == staged_storages_.end()) {
    if (used_ == buffers_.size()) buffers_.emplace_back();
    Buffer& buffer = buffers_[used_++];
    const auto nbytes = static_cast<int64_t>(storage.nbytes());
    // Pinned host memory makes device-to-host copies fast (CUDA builds only).
    const bool pinned = storage.device().is_cuda();
    if (!buffer.bytes.defined() || buffer.bytes.numel() != nbytes || buffer.pinned != pinned) {
      if (buffer.bytes.defined()) bytes_ -= static_cast<uint64_t>(buffer.bytes.numel());
      buffer.bytes = at::empty({nbytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(pinned));
      buffer.pinned = pinned;
      bytes_ += static_cast<uint64_t>(nbytes);
      ++allocations_;
    }
    StorageCopy copy;
    copy.source = storage;
    copy.destination = buffer.bytes;
    copy.deferrable = step_only_->count(key) > 0;
    if (copy.deferrable && !t.is_inference()) {  // inference tensors have no version counter
      copy.watched = t;
      copy.version = t._version();
      copy.name = path ? path->spelt() : "";
    }
    copies_->push_back(std::move(copy));
    staged = staged_storages_.emplace(key, buffer.bytes.storage()).first;
  }
  return view_into(staged->second, t);
}

c10::IValue StagingArena::stage_value(const c10::IValue& v, const PathLink* path) {
  if (v.isTensor()) return stage_tensor(v.toTensor(), path);
  if (v.isGenericDict()) {
    const auto live = v.toGenericDict();
    c10::impl::GenericDict out(live.keyType(), live.valueType());
    out.reserve(live.size());
    for (const auto& entry : live) {
      const PathLink link{path, &entry.key(), 0};
      out.insert(entry.key(), stage_value(entry.value(), &link));
    }
    return out;
  }
  if (v.isList()) {
    const auto live = v.toList();
    c10::impl::GenericList out(live.elementType());
    out.reserve(live.size());
    for (size_t i = 0; i < live.size(); ++i) {
      const PathLink link{path, nullptr, i};
      out.push_back(stage_value(live.get(i), &link));
    }
    return out;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> elements;
    const auto& live = v.toTupleRef().elements();
    elements.reserve(live.size());
    for (size_t i = 0; i < live.size(); ++i) {
      const PathLink link{path, nullptr, i};
      elements.push_back(stage_value(live[i], &link));
    }
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  return v;  // ints, doubles, strings, ... are values already
}

void StagingArena::trim() {
  for (size_t i = used_; i < buffers_.size(); ++i) {
    if (buffers_[i].bytes.defined()) bytes_ -= static_cast<uint64_t>(buffers_[i].bytes.numel());
  }
  buffers_.resize(used_);
}

void StagingArena::release() {
  buffers_.clear();
  used_ = 0;
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
