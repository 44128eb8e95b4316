#include "format/read_storage.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstdint>
#include <memory>
#include <new>

namespace autosnap {
namespace format {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPage = size_t{4} << 10;

// The mapping behind a storage: its DataPtr's context, so the deleter knows
// how much to unmap.
struct Mapping {
  void* start;
  size_t length;
};

void unmap(void* context) {
  auto* mapping = static_cast<Mapping*>(context);
  ::munmap(mapping->start, mapping->length);
  delete mapping;
}

// `length` bytes (a multiple of 4 KiB) starting on a 2 MiB boundary, so that
// every whole 2 MiB of it can be one huge page.
void* map_aligned(size_t length) {
  const size_t padded = length + kHugePage;
  void* raw = ::mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (base + kHugePage - 1) & ~(kHugePage - 1);
  if (start > base) ::munmap(raw, start - base);
  const uintptr_t end = start + length;
  if (base + padded > end) ::munmap(reinterpret_cast<void*>(end), base + padded - end);
  // Advice only: where THP is off the mapping still works with small pages.
  ::madvise(reinterpret_cast<void*>(start), length, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(start);
}

}  // namespace

c10::Storage allocate_read_storage(size_t nbytes) {
  if (nbytes < kHugePageStorageBytes) {
    return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, c10::GetCPUAllocator(), /*resizable=*/false);
  }
  const size_t length = (nbytes + kPage - 1) & ~(kPage - 1);
  auto mapping = std::make_unique<Mapping>();
  mapping->start = map_aligned(length);
  mapping->length = length;
  void* start = mapping->start;
  c10::DataPtr data(start, mapping.release(), &unmap, c10::Device(c10::DeviceType::CPU));
  return c10::Storage(c10::Storage::use_byte_size_t(), nbytes, std::move(data), /*allocator=*/nullptr,
                      /*resizable=*/false);
}

bool is_huge_page_mapping(const c10::Storage& storage) { return storage.data_ptr().get_deleter() == &unmap; }

}  // namespace format
}  // namespace autosnap
