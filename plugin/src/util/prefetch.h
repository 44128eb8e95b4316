#pragma once

// Walking thousands of tensors one after another on the training thread
// (capture, staging) reads a few fields of each one's TensorImpl, StorageImpl
// and version counter: scattered heap objects, each a cache miss that the
// next one waits for. Asked for some tensors ahead, the misses overlap. A
// prefetch is only a hint: it never faults, even on an address no longer valid.
//
// GCC counts __builtin_prefetch as free of side effects: a function that does
// nothing else may be judged pure and its call dropped as unused. Everything
// that prefetches is forced inline (C10_ALWAYS_INLINE) so the prefetches stay
// in the loop that asks for them.

#include <c10/core/TensorImpl.h>
#include <c10/macros/Macros.h>

#include <cstddef>
#include <cstring>

namespace autosnap {
namespace util {

/// How many tensors ahead of the one being checked its objects are asked for.
constexpr size_t kPrefetchAhead = 16;

/// Any object: its first and last cache line (small objects span one or two).
template <typename T>
C10_ALWAYS_INLINE void prefetch_object(const T* object) {
  if (!object) return;
  const char* at = reinterpret_cast<const char*>(object);
  __builtin_prefetch(at);
  __builtin_prefetch(at + sizeof(T) - 1);
}

/// A tensor's TensorImpl, every cache line of it (its sizes and strides lie
/// in the middle).
C10_ALWAYS_INLINE void prefetch_impl(const c10::TensorImpl* impl) {
  const char* at = reinterpret_cast<const char*>(impl);
  for (size_t offset = 0; offset < sizeof(c10::TensorImpl); offset += 64) __builtin_prefetch(at + offset);
}

/// Where a version counter's own object is (a VariableVersion is one pointer
/// to it, which no accessor gives): to prefetch it, or to tell two apart.
inline const void* counter_address(const c10::VariableVersion& version) {
  static_assert(sizeof(c10::VariableVersion) == sizeof(void*),
                "a VariableVersion is one pointer to its counter");
  const void* counter = nullptr;
  std::memcpy(&counter, &version, sizeof(counter));
  return counter;
}

/// A version counter's own object.
C10_ALWAYS_INLINE void prefetch_version(const c10::VariableVersion& version, bool for_write = false) {
  const void* counter = counter_address(version);
  if (for_write) {
    __builtin_prefetch(counter, 1);
  } else {
    __builtin_prefetch(counter);
  }
}

/// The objects a TensorImpl points to: its StorageImpl and version counter.
/// Reads the TensorImpl: prefetch_impl() it some tensors earlier.
C10_ALWAYS_INLINE void prefetch_storage_and_version(const c10::TensorImpl* impl) {
  prefetch_object(impl->unsafe_storage().unsafeGetStorageImpl());
  prefetch_version(impl->version_counter());
}

}  // namespace util
}  // namespace autosnap
