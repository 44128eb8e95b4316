#pragma once

// c10::Dict keeps its hash table at most half full, and its reserve() ignores
// a higher load factor: a dict of three entries gets 8 slots and 4 more for
// overflow, 56 bytes each. An optimizer's per-parameter state is thousands of
// such dicts, made by the capture and again by staging: megabytes of empty
// slots for every snapshot. A table filled to the brim needs only the next
// power of two of its size; a lookup still probes at most a few slots (past
// that bound the table grows, as any dict does).

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue.h>

#include <algorithm>
#include <cstddef>

namespace autosnap {
namespace util {

/// The hash table of `dict`, reachable only through an IValue's pointer: the dict's DictImpl.
inline c10::detail::DictImpl::dict_map_type& dict_table(const c10::impl::GenericDict& dict) {
  const c10::IValue handle(dict);
  return static_cast<c10::detail::DictImpl*>(const_cast<void*>(handle.internalToPointer()))->dict;
}

/// Gives `dict` the smallest table that holds `entries` (or its size, if
/// more), and lets it fill that table before it grows.
inline void compact_dict(const c10::impl::GenericDict& dict, size_t entries) {
  auto& table = dict_table(dict);
  table.max_load_factor(1.0f);
  // One slot alone is no table: the first insert would grow it to four.
  table.rehash(std::max<size_t>(entries, 2));
}

}  // namespace util
}  // namespace autosnap
