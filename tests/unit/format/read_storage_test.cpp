// Memory for loaded storages (format/read_storage.h): big ones get their own
// mapping on 2 MiB boundaries (one page fault per huge page instead of one per
// 4 KiB page), small ones LibTorch's allocator, and loads use them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstring>

#include "autosnap/autosnap.h"
#include "format/read_storage.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using format::allocate_read_storage;
using format::is_huge_page_mapping;
using format::kHugePageStorageBytes;

TEST(ReadStorage, BigStoragesAreMappedOnHugePageBoundaries) {
  for (const size_t nbytes : {kHugePageStorageBytes, (size_t{3} << 20) + 5}) {
    c10::Storage storage = allocate_read_storage(nbytes);
    EXPECT_TRUE(is_huge_page_mapping(storage)) << nbytes;
    EXPECT_EQ(storage.nbytes(), nbytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(storage.data()) % kHugePageStorageBytes, 0u) << nbytes;
    EXPECT_FALSE(storage.resizable());
    // Every byte is there to write and read back (sanitizers check the bounds).
    std::memset(storage.data(), 0x5a, nbytes);
    EXPECT_EQ(static_cast<unsigned char*>(storage.data())[nbytes - 1], 0x5a);
  }
}

TEST(ReadStorage, SmallStoragesComeFromLibTorchsAllocator) {
  c10::Storage storage = allocate_read_storage(kHugePageStorageBytes - 1);
  EXPECT_FALSE(is_huge_page_mapping(storage));
  EXPECT_EQ(storage.nbytes(), kHugePageStorageBytes - 1);
  EXPECT_EQ(allocate_read_storage(0).nbytes(), 0u);
}

TEST(ReadStorage, LoadsPutBigTensorsOnTheirOwnMappingAndOutliveTheValue) {
  testing::TempDir dir;
  auto big = torch::arange(int64_t{1} << 19, torch::kFloat64);  // 4 MiB
  auto small = torch::arange(10, torch::kFloat32);
  auto saved = dict();
  saved.insert("big", big);
  saved.insert("small", small);
  save(saved, dir.file("state.pt"));

  at::Tensor loaded_big;
  {
    const auto loaded = load(dir.file("state.pt")).toGenericDict();
    loaded_big = loaded.at("big").toTensor();
    EXPECT_FALSE(is_huge_page_mapping(loaded.at("small").toTensor().storage()));
    EXPECT_TRUE(torch::equal(loaded.at("small").toTensor(), small));
  }
  EXPECT_TRUE(is_huge_page_mapping(loaded_big.storage()));
  EXPECT_TRUE(torch::equal(loaded_big, big));
  loaded_big.add_(1);  // writable, like any tensor
  EXPECT_TRUE(torch::equal(loaded_big, big + 1));
}

}  // namespace
}  // namespace autosnap
