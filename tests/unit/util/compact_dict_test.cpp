// Dicts of a captured or staged state in the smallest hash tables: an
// optimizer's per-parameter states are thousands of small dicts, made at
// every capture and again by staging.
#include "util/compact_dict.h"

#include <gtest/gtest.h>

#include <string>

namespace autosnap {
namespace util {
namespace {

c10::impl::GenericDict string_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

size_t slots(const c10::impl::GenericDict& dict) { return dict_table(dict).bucket_count(); }

// Every key from 0 to n - 1 in insertion order, each with its value.
void expect_entries(const c10::impl::GenericDict& dict, int64_t n) {
  ASSERT_EQ(dict.size(), static_cast<size_t>(n));
  int64_t i = 0;
  for (const auto& entry : dict) {
    EXPECT_EQ(entry.key().toStringRef(), "k" + std::to_string(i)) << "insertion order";
    EXPECT_EQ(entry.value().toInt(), i);
    ++i;
  }
  for (i = 0; i < n; ++i) {
    const auto found = dict.find("k" + std::to_string(i));
    ASSERT_NE(found, dict.end()) << i;
    EXPECT_EQ(found->value().toInt(), i);
  }
  EXPECT_EQ(dict.find("absent"), dict.end());
}

TEST(CompactDict, ADictOfThreeEntriesTakesFourSlotsAndGrowsPastThem) {
  auto plain = string_dict();
  plain.reserve(3);
  auto compact = string_dict();
  compact_dict(compact, 3);
  for (int64_t i = 0; i < 3; ++i) {
    plain.insert("k" + std::to_string(i), i);
    compact.insert("k" + std::to_string(i), i);
  }
  EXPECT_EQ(slots(plain), 8u) << "c10::Dict's own table, at most half full";
  EXPECT_EQ(slots(compact), 4u);
  expect_entries(compact, 3);
  for (int64_t i = 3; i < 40; ++i) compact.insert("k" + std::to_string(i), i);
  EXPECT_GE(slots(compact), 40u);
  expect_entries(compact, 40);
  EXPECT_EQ(compact.erase("k39"), 1u);
  expect_entries(compact, 39);
}

TEST(CompactDict, ADictOfOneEntryTakesTwoSlots) {
  auto dict = string_dict();
  compact_dict(dict, 1);
  dict.insert("k0", int64_t{0});
  EXPECT_EQ(slots(dict), 2u) << "a table of one slot would grow to four at the first insert";
  expect_entries(dict, 1);
}

TEST(CompactDict, AFilledDictShrinksToItsSize) {
  auto dict = string_dict();
  for (int64_t i = 0; i < 5000; ++i) dict.insert("k" + std::to_string(i), i);
  EXPECT_EQ(slots(dict), 16384u);
  compact_dict(dict, 0);
  EXPECT_EQ(slots(dict), 8192u);
  expect_entries(dict, 5000);
}

}  // namespace
}  // namespace util
}  // namespace autosnap
