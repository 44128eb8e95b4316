#pragma once

// Memory for the storages a load reads from disk.
//
// A storage of 2 MiB or more gets its own mapping, aligned to 2 MiB and
// advised for transparent huge pages: a fresh 4 KiB page costs a page fault
// when the read fills it and, on paravirtualised hosts (PVM), another when
// user code first touches it (the CRC, the copy into a live model, the first
// training step). Huge pages take one fault per 2 MiB instead: on the EPYC VM
// a cold 480 MB file read into fresh memory in 0.14 s instead of 1.8-2.4 s.
// Smaller storages come from LibTorch's CPU allocator.

#include <c10/core/Storage.h>

#include <cstddef>

namespace autosnap {
namespace format {

/// Storages of at least this many bytes are mapped on their own.
constexpr size_t kHugePageStorageBytes = size_t{2} << 20;

/// A CPU storage of `nbytes` (not resizable), huge-page backed from
/// kHugePageStorageBytes on where the kernel allows it; throws std::bad_alloc.
c10::Storage allocate_read_storage(size_t nbytes);

/// Whether `storage` came from allocate_read_storage's own mapping (for tests).
bool is_huge_page_mapping(const c10::Storage& storage);

}  // namespace format
}  // namespace autosnap
