#include "daemon/staging.h"

#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

#include "autosnap/errors.h"
#include "format/shard.h"
#include "util/compact_dict.h"
#include "util/prefetch.h"

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

// A host buffer of `nbytes` as a storage alone: a tensor object for each
// buffer would be thousands more objects for a state of many small tensors.
c10::Storage staging_buffer(int64_t nbytes, bool pinned) {
  if (pinned) return at::empty({nbytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true)).storage();
  return c10::Storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(nbytes), c10::GetCPUAllocator(),
                      /*resizable=*/true);
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

// A tensor's dtype, offset, sizes and strides as a few numbers in a flat
// array: [dim (-1: undefined), dtype, offset, sizes..., strides...].
void append_shape(const at::Tensor& t, std::vector<int64_t>& out) {
  if (!t.defined()) {
    out.push_back(-1);
    return;
  }
  out.push_back(t.dim());
  out.push_back(static_cast<int64_t>(t.scalar_type()));
  out.push_back(t.storage_offset());
  out.insert(out.end(), t.sizes().begin(), t.sizes().end());
  out.insert(out.end(), t.strides().begin(), t.strides().end());
}

// Whether dense `live` is shaped as recorded at `*shape`, which moves past the record.
bool same_shape(const at::Tensor& live, const int64_t*& shape) {
  const int64_t dim = *shape++;
  if (dim != live.dim()) return false;
  const auto sizes = live.sizes();
  const auto strides = live.strides();
  const bool same = shape[0] == static_cast<int64_t>(live.scalar_type()) &&
                    shape[1] == live.storage_offset() && std::equal(sizes.begin(), sizes.end(), shape + 2) &&
                    std::equal(strides.begin(), strides.end(), shape + 2 + dim);
  shape += 2 + 2 * dim;
  return same;
}

// Above this much in all, staging copies store past the cache.
constexpr size_t kMinBytesToStream = 32 << 20;

// Copies `size` bytes; `streaming`, with stores that bypass the cache, as
// glibc's memcpy does for one copy larger than the cache but not for the
// thousands of small ones a state of many tensors is: a staged copy is read
// again only by the writer, long after, and caching it costs reading every
// destination line first and evicting the training's own data.
void copy_bytes(char* to, const char* from, size_t size, bool streaming) {
#if defined(__SSE2__)
  const size_t head = (16 - reinterpret_cast<uintptr_t>(to) % 16) % 16;
  if (streaming && size >= head + 256) {
    std::memcpy(to, from, head);
    to += head;
    from += head;
    size -= head;
    const size_t body = size & ~size_t{63};
    for (size_t i = 0; i < body; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 32));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 48), d);
    }
    std::memcpy(to + body, from + body, size - body);
    return;
  }
#endif
  (void)streaming;
  std::memcpy(to, from, size);
}

// Streaming stores are weakly ordered: a thread's must be complete before it
// tells another (a join, a lock) that the copies are done.
void end_streaming() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

bool dense(const at::Tensor& t) { return t.has_storage() && t.layout() == at::kStrided; }

}  // namespace

void perform_copies(const std::vector<StorageCopy>& copies, CopySelection which) {
  auto selected = [which](const StorageCopy& copy) {
    return copy.bytes > 0 &&
           (which == CopySelection::kAll || copy.deferrable == (which == CopySelection::kDeferrable));
  };
  // Host copies are cut into runs of about kRun bytes that the threads share
  // (one core's memcpy is well below what the memory can do, and the training
  // thread waits for it): whole small copies [first, last), or one part of a
  // big one. Listing them reads only the copies themselves.
  constexpr size_t kRun = 4 << 20;
  struct Run {
    size_t first, last;
    size_t offset = 0, size = 0;  // size 0: the whole copies
  };
  std::vector<Run> runs;
  size_t total = 0, open_bytes = 0;
  std::exception_ptr error;  // a failing copy stops no other; the first error is rethrown
  for (size_t i = 0; i < copies.size(); ++i) {
    const StorageCopy& copy = copies[i];
    if (!selected(copy)) continue;
    if (!copy.host) {
      try {
        if (!copy.destination) throw Error("a device storage to stage has no host buffer");
        bytes_of(copy.destination).copy_(bytes_of(copy.source));  // device -> pinned host
      } catch (...) {
        if (!error) error = std::current_exception();
      }
      continue;
    }
    total += copy.bytes;
    if (copy.bytes >= kRun) {
      for (size_t offset = 0; offset < copy.bytes; offset += kRun)
        runs.push_back({i, i + 1, offset, std::min(kRun, copy.bytes - offset)});
      open_bytes = 0;
      continue;
    }
    if (open_bytes == 0) runs.push_back({i, i + 1});
    runs.back().last = i + 1;
    open_bytes += copy.bytes;
    if (open_bytes >= kRun) open_bytes = 0;
  }
  // The source is read now, not when listed: a storage's bytes may have moved
  // since it was staged (resized); at most the staged size is copied.
  const bool streaming = total >= kMinBytesToStream;
  auto copy_part = [streaming](const StorageCopy& copy, size_t offset, size_t size) {
    const size_t now = copy.source.nbytes();
    if (offset >= now) return;
    copy_bytes(static_cast<char*>(copy.into) + offset, static_cast<const char*>(copy.source.data()) + offset,
               std::min(size, now - offset), streaming);
  };
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t r = next++; r < runs.size(); r = next++) {
      const Run& run = runs[r];
      if (run.size > 0) {
        copy_part(copies[run.first], run.offset, run.size);
        continue;
      }
      for (size_t i = run.first; i < run.last; ++i) {
        if (selected(copies[i]) && copies[i].host) copy_part(copies[i], 0, copies[i].bytes);
      }
    }
    if (streaming) end_streaming();
  };
  // Asked once: glibc reads a /sys file for it, on the training thread.
  static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t threads =
      std::min<size_t>({kMaxCopyThreads, size_t{cores}, total / kMinBytesPerCopyThread + 1, runs.size()});
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& helper : helpers) helper.join();
  if (error) std::rethrow_exception(error);
}

void StableContainers::add(const c10::IValue& container, int64_t generation) {
  containers_.emplace_back(container.internalToPointer(), generation);
}

const int64_t* StableContainers::generation_of(const c10::IValue& container) const {
  for (const auto& [pointer, generation] : containers_) {
    if (pointer == container.internalToPointer()) return &generation;
  }
  return nullptr;
}

bool StepOnlyStorages::contains(const void* storage) const {
  if (!collected_) {
    if (collect_) collect_(storages_);
    collected_ = true;
  }
  return storages_.count(storage) > 0;
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
struct PathLink {
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

c10::IValue StagingArena::stage(const c10::IValue& live, const StepOnlyStorages& step_only,
                                const StableContainers& stable) {
  step_only_ = &step_only;
  stable_ = &stable;
  // Whether the reuse walk may keep the copies' flags; the result, reused or built, has this call's.
  flags_current_ =
      step_only.generation() != StepOnlyStorages::kUnknown && step_only.generation() == flags_generation_;
  flags_generation_ = step_only.generation();
  if (!last_staged_.isNone()) {
    tensors_met_ = 0;
    replaced_sources_.clear();
    if (same_layout(live, last_staged_) && tensors_met_ == tensor_copies_.size() && sources_distinct()) {
      ++reuses_;
      return last_staged_;
    }
  }
  // A new layout: build it all again.
  last_staged_ = c10::IValue();
  copies_.clear();
  tensor_copies_.clear();
  stable_records_.clear();
  used_ = 0;
  staged_storages_.clear();
  staged_storages_.reserve(buffers_.size());
  c10::IValue staged = stage_value(live, nullptr);
  staged_storages_.clear();
  last_staged_ = staged;
  return staged;
}

namespace {

// Equal plain values (doubles bit for bit, so a NaN equals itself). Called
// for every dict key: no tagKind() strings.
bool same_plain(const c10::IValue& a, const c10::IValue& b) {
  if (a.isString()) return b.isString() && (a.isSameIdentity(b) || a.toStringRef() == b.toStringRef());
  if (a.isInt()) return b.isInt() && a.toInt() == b.toInt();
  if (a.isDouble()) {
    if (!b.isDouble()) return false;
    const double x = a.toDouble(), y = b.toDouble();
    return std::memcmp(&x, &y, sizeof(x)) == 0;
  }
  if (a.isNone()) return b.isNone();
  if (a.isBool()) return b.isBool() && a.toBool() == b.toBool();
  if (a.isComplexDouble()) return b.isComplexDouble() && a.toComplexDouble() == b.toComplexDouble();
  if (a.isDevice()) return b.isDevice() && a.toDevice() == b.toDevice();
  return false;
}

}  // namespace

bool StagingArena::sources_distinct() const {
  // Storages shared where they were not (two copies from one storage) change
  // what torch.save records. The sources kept were distinct after the last
  // stage() and are held (no new storage can take their address), so only a
  // replaced one can meet another: one pass, not a sort of thousands.
  if (replaced_sources_.empty()) return true;
  std::vector<const void*> replaced;
  replaced.reserve(replaced_sources_.size());
  for (size_t index : replaced_sources_) replaced.push_back(copies_[index].source.unsafeGetStorageImpl());
  std::sort(replaced.begin(), replaced.end());
  if (std::adjacent_find(replaced.begin(), replaced.end()) != replaced.end()) return false;
  size_t met = 0;
  for (const auto& copy : copies_)
    met += std::binary_search(replaced.begin(), replaced.end(), copy.source.unsafeGetStorageImpl());
  return met == replaced.size();  // each replaced source on its own copy alone
}

bool StagingArena::same_tensor(const at::Tensor& live, const at::Tensor& staged) {
  if (!live.defined() || !staged.defined()) return !live.defined() && !staged.defined();
  return dense(live) && live.dtype() == staged.dtype() && live.sizes() == staged.sizes() &&
         live.strides() == staged.strides() && live.storage_offset() == staged.storage_offset() &&
         same_source(live);
}

bool StagingArena::same_source(const at::Tensor& live) {
  if (tensors_met_ >= tensor_copies_.size()) return false;
  const auto [index, first] = tensor_copies_[tensors_met_++];
  StorageCopy& copy = copies_[index];
  const c10::Storage& storage = live.storage();
  if (storage.nbytes() != copy.bytes) return false;
  if (storage.unsafeGetStorageImpl() != copy.source.unsafeGetStorageImpl()) {
    // A tensor made anew at each capture (an optimizer's step count, a generator's
    // state) keeps its buffer; a view must stay on the storage of the first tensor met.
    if (!first || storage.device() != copy.source.device()) return false;
    copy.source = storage;
    replaced_sources_.push_back(index);
  }
  if (first) {  // what is deferrable, and the version counter to watch, are this step's
    if (!flags_current_) copy.deferrable = step_only_->contains(storage.unsafeGetStorageImpl());
    if (!copy.deferrable || live.is_inference()) {
      copy.counter = c10::VariableVersion();
    } else {
      const c10::VariableVersion& counter = live.unsafeGetTensorImpl()->version_counter();
      // Mostly the same counter: no reference counting then.
      if (util::counter_address(copy.counter) != util::counter_address(counter)) copy.counter = counter;
    }
    copy.version = copy.counter.enabled() ? copy.counter.current_version() : 0;
  }
  return true;
}

// `staged` is const as an IValue only: its dicts and lists are handles that are updated in place.
bool StagingArena::same_dict(const c10::IValue& live, const c10::IValue& staged) {
  if (!staged.isGenericDict()) return false;
  const int64_t* generation = stable_->generation_of(live);
  if (generation) {
    for (auto& record : stable_records_) {
      if (record.staged != staged.internalToPointer()) continue;
      if (record.listed && record.live.isSameIdentity(live) && record.generation == *generation &&
          record.first_tensor == tensors_met_) {
        const size_t n = record.live_tensors.size();
        const int64_t* shape = record.staged_shapes.data();
        constexpr size_t kAhead = util::kPrefetchAhead;
        for (size_t i = 0; i < n; ++i) {
          if (i + 2 * kAhead < n)
            util::prefetch_impl(record.live_tensors[i + 2 * kAhead].unsafeGetTensorImpl());
          if (i + kAhead < n)
            util::prefetch_storage_and_version(record.live_tensors[i + kAhead].unsafeGetTensorImpl());
          const at::Tensor& tensor = record.live_tensors[i];
          if (!tensor.defined()) {
            if (*shape++ != -1) return false;
          } else if (!dense(tensor) || !same_shape(tensor, shape) || !same_source(tensor)) {
            return false;
          }
        }
        record.moved = false;
        ++stable_skips_;
        return true;
      }
      break;
    }
  }
  const size_t first_tensor = tensors_met_;
  const auto from = live.toGenericDict();
  auto to = staged.toGenericDict();
  if (from.size() != to.size()) return false;
  auto it = to.begin();
  for (const auto& entry : from) {
    if (!same_plain(entry.key(), it->key())) return false;
    if (format::is_plain_value(entry.value())) {
      if (!format::is_plain_value(it->value())) return false;
      if (!same_plain(entry.value(), it->value())) it->setValue(entry.value());
    } else if (!same_layout(entry.value(), it->value())) {
      return false;
    }
    ++it;
  }
  if (generation) record_stable(live, staged, *generation, first_tensor);
  return true;
}

void StagingArena::record_stable(const c10::IValue& live, const c10::IValue& staged, int64_t generation,
                                 size_t first_tensor) {
  auto record = std::find_if(stable_records_.begin(), stable_records_.end(),
                             [&](const StableRecord& r) { return r.staged == staged.internalToPointer(); });
  bool moved = false, moved_before = false;
  if (record == stable_records_.end()) {
    record = stable_records_.insert(stable_records_.end(), StableRecord());
    record->staged = staged.internalToPointer();
  } else {
    moved = !record->live.isSameIdentity(live) || record->generation != generation;
    moved_before = record->moved;
  }
  record->live = live;
  record->generation = generation;
  record->first_tensor = first_tensor;
  record->moved = moved;
  if (moved) {
    record->listed = false;
    record->live_tensors.clear();
    record->staged_shapes.clear();
  }
  if (record->listed || (moved && moved_before)) return;
  for_each_tensor(live, [&](const at::Tensor& t) { record->live_tensors.push_back(t); });
  for_each_tensor(staged, [&](const at::Tensor& t) { append_shape(t, record->staged_shapes); });
  record->listed = true;
}

bool StagingArena::same_layout(const c10::IValue& live, const c10::IValue& staged) {
  if (live.isTensor()) return staged.isTensor() && same_tensor(live.toTensor(), staged.toTensor());
  if (live.isGenericDict()) return same_dict(live, staged);
  if (live.isList()) {
    if (!staged.isList()) return false;
    const auto from = live.toList();
    auto to = staged.toList();
    if (from.size() != to.size()) return false;
    for (size_t i = 0; i < from.size(); ++i) {
      const c10::IValue value = from.get(i);
      const c10::IValue target = to.get(i);
      if (format::is_plain_value(value)) {
        if (!format::is_plain_value(target)) return false;
        if (!same_plain(value, target)) to.set(i, value);
      } else if (!same_layout(value, target)) {
        return false;
      }
    }
    return true;
  }
  if (live.isTuple()) {  // tuples cannot be changed in place: their plain values must be equal
    if (!staged.isTuple()) return false;
    const auto& from = live.toTupleRef().elements();
    const auto& to = staged.toTupleRef().elements();
    if (from.size() != to.size()) return false;
    for (size_t i = 0; i < from.size(); ++i) {
      const c10::IValue& target = to[i];
      if (format::is_plain_value(from[i]) ? !same_plain(from[i], target) : !same_layout(from[i], target))
        return false;
    }
    return true;
  }
  return format::is_plain_value(live) && same_plain(live, staged);
}

c10::IValue StagingArena::stage_tensor(const at::Tensor& t, const PathLink* path) {
  if (!t.defined()) return t;
  if (!t.has_storage() || t.layout() != at::kStrided) {
    throw Error("cannot snapshot '" + (path ? path->spelt() : "") + "': only dense tensors can be saved");
  }
  const c10::Storage& storage = t.storage();
  const void* key = storage.unsafeGetStorageImpl();
  auto staged = staged_storages_.find(key);
  const bool first = staged == staged_storages_.end();
  if (first) {
    if (used_ == buffers_.size()) buffers_.emplace_back();
    Buffer& buffer = buffers_[used_++];
    const auto nbytes = static_cast<int64_t>(storage.nbytes());
    // Pinned host memory makes device-to-host copies fast (CUDA builds only).
    const bool pinned = storage.device().is_cuda();
    if (!buffer.storage || buffer.storage.nbytes() != static_cast<size_t>(nbytes) ||
        buffer.pinned != pinned) {
      if (buffer.storage) bytes_ -= buffer.storage.nbytes();
      buffer.storage = staging_buffer(nbytes, pinned);
      buffer.pinned = pinned;
      bytes_ += static_cast<uint64_t>(nbytes);
      ++allocations_;
    }
    StorageCopy copy;
    copy.source = storage;
    copy.destination = buffer.storage;
    copy.into = buffer.storage.data();
    copy.bytes = storage.nbytes();
    copy.host = storage.device().is_cpu();
    copy.deferrable = step_only_->contains(key);
    if (copy.deferrable && !t.is_inference()) {  // inference tensors have no version counter
      copy.counter = t.unsafeGetTensorImpl()->version_counter();
      copy.version = copy.counter.current_version();
    }
    copies_.push_back(std::move(copy));
    const size_t index = copies_.size() - 1;
    staged = staged_storages_.emplace(key, std::make_pair(buffer.storage, index)).first;
  }
  tensor_copies_.emplace_back(staged->second.second, first);
  return view_into(staged->second.first, t);
}

c10::IValue StagingArena::stage_value(const c10::IValue& v, const PathLink* path) {
  if (v.isTensor()) return stage_tensor(v.toTensor(), path);
  if (v.isGenericDict()) {
    const size_t first_tensor = tensor_copies_.size();
    const auto live = v.toGenericDict();
    c10::impl::GenericDict out(live.keyType(), live.valueType());
    util::compact_dict(out, live.size());
    for (const auto& entry : live) {
      const PathLink link{path, &entry.key(), 0};
      out.insert(entry.key(), stage_value(entry.value(), &link));
    }
    if (const int64_t* generation = stable_->generation_of(v))
      record_stable(v, out, *generation, first_tensor);
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
    if (buffers_[i].storage) bytes_ -= buffers_[i].storage.nbytes();
  }
  buffers_.resize(used_);
}

void StagingArena::forget_sources() {
  last_staged_ = c10::IValue();
  copies_.clear();
  tensor_copies_.clear();
  stable_records_.clear();
}

void StagingArena::release() {
  forget_sources();
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
      perform_copies(copies_, CopySelection::kDeferrable);
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

namespace {

// The path of the first tensor in `value` on `storage`, spelt into `path_found`.
bool find_storage(const c10::IValue& value, const void* storage, const PathLink* path,
                  std::string& path_found) {
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    if (!t.defined() || !t.has_storage() || t.storage().unsafeGetStorageImpl() != storage) return false;
    path_found = path ? path->spelt() : "";
    return true;
  }
  if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      const PathLink link{path, &entry.key(), 0};
      if (find_storage(entry.value(), storage, &link, path_found)) return true;
    }
    return false;
  }
  const bool list = value.isList();
  if (!list && !value.isTuple()) return false;
  const auto elements = list ? value.toListRef() : c10::ArrayRef<c10::IValue>(value.toTupleRef().elements());
  for (size_t i = 0; i < elements.size(); ++i) {
    const PathLink link{path, nullptr, i};
    if (find_storage(elements[i], storage, &link, path_found)) return true;
  }
  return false;
}

}  // namespace

std::string DeferredCopies::modified_since_staging() const {
  for (const auto& copy : copies_) {
    if (copy.deferrable && copy.counter.enabled() && copy.counter.current_version() != copy.version) {
      // Named only now (a rare warning): a name kept for each of thousands of copies cost memory.
      std::string path;
      find_storage(staged_, copy.destination.unsafeGetStorageImpl(), nullptr, path);
      return path;
    }
  }
  return "";
}

}  // namespace daemon
}  // namespace autosnap
