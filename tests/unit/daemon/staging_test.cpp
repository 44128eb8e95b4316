// Staging (daemon/staging.h): tracked tensors are copied per storage into
// reusable host buffers, so a snapshot keeps torch.save's sharing (views,
// tied weights) and steady-state snapshots allocate nothing new.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unordered_set>

#include "autosnap/values.h"
#include "daemon/staging.h"
#include "daemon/tracked.h"
#include "support/snapshotter_fixtures.h"
#include "util/compact_dict.h"

namespace autosnap {
namespace {

using daemon::DeferredCopies;
using daemon::StagingArena;
using daemon::StorageCopy;
using testing::Model;

c10::impl::GenericDict new_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

at::Tensor tensor_at(const c10::IValue& dict, const std::string& key) {
  const auto d = dict.toGenericDict();
  auto it = d.find(key);
  if (it == d.end()) throw std::runtime_error("no key '" + key + "' in the staged value");
  return it->value().toTensor();
}

// Stages `live` and performs every copy at once.
c10::IValue stage_now(StagingArena& arena, const c10::IValue& live,
                      std::vector<StorageCopy>* copies_out = nullptr) {
  c10::IValue staged = arena.stage(live, {});
  daemon::perform_copies(arena.copies());
  if (copies_out) *copies_out = arena.copies();
  return staged;
}

const void* storage_of(const at::Tensor& t) { return t.storage().unsafeGetStorageImpl(); }

TEST(Staging, ViewsOfOneStorageStayViewsOfOneStagingBuffer) {
  const auto base = torch::arange(12, torch::kFloat64);
  auto live = new_dict();
  live.insert("matrix", base.view({3, 4}));
  live.insert("slice", base.slice(0, 2, 8));
  live.insert("column", base.view({3, 4}).select(1, 1));  // strided
  live.insert("other", torch::arange(5, torch::kInt64));
  StagingArena arena;
  std::vector<StorageCopy> copies;
  const auto staged = stage_now(arena, live, &copies);
  EXPECT_EQ(copies.size(), 2u) << "one copy per storage, not per tensor";
  EXPECT_EQ(arena.bytes(), 12u * 8 + 5u * 8);

  const at::Tensor matrix = tensor_at(staged, "matrix"), slice = tensor_at(staged, "slice"),
                   column = tensor_at(staged, "column"), other = tensor_at(staged, "other");
  EXPECT_EQ(storage_of(matrix), storage_of(slice)) << "views of one storage must stay views of one buffer";
  EXPECT_EQ(storage_of(matrix), storage_of(column));
  EXPECT_NE(storage_of(matrix), storage_of(other));
  EXPECT_NE(storage_of(matrix), storage_of(base)) << "staging copies; it must not alias the live storage";
  for (const std::string key : {"matrix", "slice", "column", "other"}) {
    const at::Tensor original = live.at(key).toTensor();
    const at::Tensor copy = tensor_at(staged, key);
    EXPECT_EQ(copy.scalar_type(), original.scalar_type()) << key;
    EXPECT_EQ(copy.sizes(), original.sizes()) << key;
    EXPECT_EQ(copy.strides(), original.strides()) << key;
    EXPECT_EQ(copy.storage_offset(), original.storage_offset()) << key;
    EXPECT_TRUE(torch::equal(copy, original)) << key << ": staged " << copy << "\nlive " << original;
  }
  base.fill_(-1);  // training goes on
  EXPECT_EQ(slice[0].item<double>(), 2.0) << "the staged copy keeps the values of its step";
}

// A staged state mirrors thousands of small dicts (an optimizer's
// per-parameter states): each in the smallest hash table that holds it.
TEST(Staging, StagedDictsTakeTheSmallestTables) {
  auto parameter_state = new_dict();
  parameter_state.insert("step", torch::ones({}));
  parameter_state.insert("exp_avg", torch::zeros({4}));
  parameter_state.insert("exp_avg_sq", torch::zeros({4}));
  auto live = new_dict();
  live.insert("0", parameter_state);
  StagingArena arena;
  const auto staged = stage_now(arena, live).toGenericDict().at("0").toGenericDict();
  EXPECT_EQ(util::dict_table(staged).bucket_count(), 4u) << "c10::Dict's own: 8, at most half full";
  EXPECT_TRUE(torch::equal(staged.at("exp_avg").toTensor(), parameter_state.at("exp_avg").toTensor()));
}

TEST(Staging, TiedWeightsShareOneBuffer) {
  const auto weight = torch::randn({4, 3});
  auto live = new_dict();
  live.insert("encoder.weight", weight);
  live.insert("decoder.weight", weight);
  StagingArena arena;
  std::vector<StorageCopy> copies;
  const auto staged = stage_now(arena, live, &copies);
  EXPECT_EQ(copies.size(), 1u);
  EXPECT_EQ(arena.allocations(), 1);
  EXPECT_EQ(arena.bytes(), 4u * 3 * 4);
  EXPECT_EQ(storage_of(tensor_at(staged, "encoder.weight")), storage_of(tensor_at(staged, "decoder.weight")));
  EXPECT_TRUE(torch::equal(tensor_at(staged, "decoder.weight"), weight));
}

TEST(Staging, BuffersAreReusedAcrossStageCalls) {
  auto live = new_dict();
  const auto a = torch::zeros({100});
  live.insert("a", a);
  live.insert("nested", c10::ivalue::Tuple::create({torch::zeros({7}, torch::kInt32), int64_t(3)}));
  StagingArena arena;
  const auto first = stage_now(arena, live);
  const int64_t allocations = arena.allocations();
  const uint64_t bytes = arena.bytes();
  EXPECT_EQ(allocations, 2);
  const void* first_buffer = storage_of(tensor_at(first, "a"));

  for (int step = 1; step <= 3; ++step) {
    a.fill_(step);
    const auto staged = stage_now(arena, live);
    EXPECT_EQ(arena.allocations(), allocations) << "step " << step << ": same shapes, no new buffers";
    EXPECT_EQ(arena.bytes(), bytes);
    EXPECT_EQ(storage_of(tensor_at(staged, "a")), first_buffer) << "the same buffer is reused";
    EXPECT_TRUE(torch::all(tensor_at(staged, "a") == step).item<bool>()) << tensor_at(staged, "a");
    EXPECT_EQ(staged.toGenericDict().at("nested").toTupleRef().elements()[1].toInt(), 3)
        << "non-tensors pass through";
  }
}

// A state of thousands of tensors is not rebuilt at every snapshot: the same
// layout gives back the last result, with its plain values brought up to date;
// any change of layout (a new storage, shape, view or key) builds it again.
TEST(Staging, TheSameLayoutReusesTheLastResultWithItsPlainValuesUpToDate) {
  const auto weight = torch::zeros({10});
  auto nested = new_dict();
  nested.insert("bias", torch::zeros({3}));
  auto live = new_dict();
  live.insert("weight", weight);
  live.insert("view", weight.slice(0, 2, 6));
  live.insert("step", int64_t(1));
  live.insert("lr", 0.1);
  live.insert("name", std::string("adam"));
  c10::impl::GenericList list(c10::AnyType::get());
  list.push_back(torch::zeros({2}));
  list.push_back(int64_t(5));
  live.insert("list", list);
  live.insert("nested", nested);
  StagingArena arena;
  const auto first = stage_now(arena, live);
  EXPECT_EQ(arena.reuses(), 0);

  weight.fill_(2);
  live.insert_or_assign("step", int64_t(2));
  live.insert_or_assign("lr", 0.05);
  live.at("list").toList().set(1, int64_t(6));
  std::vector<StorageCopy> copies;
  const auto second = stage_now(arena, live, &copies);
  EXPECT_EQ(arena.reuses(), 1);
  EXPECT_TRUE(second.isSameIdentity(first)) << "the last result is given back";
  EXPECT_EQ(copies.size(), 3u) << "one copy per storage (the view shares its weight's), as when it was built";
  EXPECT_TRUE(torch::all(tensor_at(second, "weight") == 2).item<bool>());
  EXPECT_TRUE(torch::all(tensor_at(second, "view") == 2).item<bool>());
  EXPECT_EQ(second.toGenericDict().at("step").toInt(), 2);
  EXPECT_EQ(second.toGenericDict().at("lr").toDouble(), 0.05);
  EXPECT_EQ(second.toGenericDict().at("list").toList().get(1).toInt(), 6);

  // A tensor made anew at each capture (an optimizer's step) keeps its buffer.
  live.insert_or_assign("weight", torch::full({10}, 5.0));
  stage_now(arena, live);
  const int64_t before_new_tensors = arena.reuses();
  live.insert_or_assign("weight", torch::full({10}, 6.0));
  const auto renewed = stage_now(arena, live);
  EXPECT_EQ(arena.reuses(), before_new_tensors + 1) << "a new storage of the same size is the same layout";
  EXPECT_TRUE(torch::all(tensor_at(renewed, "weight") == 6).item<bool>()) << tensor_at(renewed, "weight");
  // Two storages that become one are not: torch.save records the sharing.
  auto pair = new_dict();
  pair.insert("a", torch::zeros({4}));
  pair.insert("b", torch::zeros({4}));
  StagingArena pair_arena;
  stage_now(pair_arena, pair);
  const auto shared = torch::ones({4});
  pair.insert_or_assign("a", shared);
  pair.insert_or_assign("b", shared);
  std::vector<StorageCopy> pair_copies;
  const auto paired = stage_now(pair_arena, pair, &pair_copies);
  EXPECT_EQ(pair_arena.reuses(), 0) << "two tensors now on one storage";
  EXPECT_EQ(pair_copies.size(), 1u);
  EXPECT_EQ(storage_of(tensor_at(paired, "a")), storage_of(tensor_at(paired, "b")));
  // Nor is one tensor moved onto a storage another kept: only the moved one is replaced.
  auto trio = new_dict();
  const auto kept = torch::zeros({4});
  trio.insert("a", torch::zeros({4}));
  trio.insert("b", kept);
  trio.insert("c", torch::zeros({4}));
  StagingArena trio_arena;
  stage_now(trio_arena, trio);
  trio.insert_or_assign("c", kept.view({4}));
  std::vector<StorageCopy> trio_copies;
  const auto joined = stage_now(trio_arena, trio, &trio_copies);
  EXPECT_EQ(trio_arena.reuses(), 0) << "c now on b's storage";
  EXPECT_EQ(trio_copies.size(), 2u);
  EXPECT_EQ(storage_of(tensor_at(joined, "b")), storage_of(tensor_at(joined, "c")));

  // Each change of layout builds it again, with the right values.
  auto expect_rebuilt = [&](const std::string& what, const std::string& key, double value) {
    const int64_t reuses = arena.reuses();
    const auto staged = stage_now(arena, live);
    EXPECT_EQ(arena.reuses(), reuses) << what << " must not reuse the last result";
    EXPECT_TRUE(torch::all(tensor_at(staged, key) == value).item<bool>())
        << what << ": " << tensor_at(staged, key);
    stage_now(arena, live);
    EXPECT_EQ(arena.reuses(), reuses + 1) << what << ": the new layout is reused next time";
  };
  live.insert_or_assign("weight", torch::full({11}, 7.0));
  expect_rebuilt("another shape", "weight", 7.0);
  live.insert_or_assign("view", weight.slice(0, 4, 8));  // another view of the same storage
  expect_rebuilt("another view", "view", 2.0);
  weight.resize_({12});  // the same storage, grown
  weight.fill_(3);
  expect_rebuilt("a resized storage", "view", 3.0);
  live.insert("extra", torch::full({1}, 4.0));
  expect_rebuilt("a new key", "extra", 4.0);
  live.insert_or_assign("nested", c10::ivalue::Tuple::create({torch::ones({1}), int64_t(1)}));
  stage_now(arena, live);
  live.insert_or_assign(
      "nested", c10::ivalue::Tuple::create({live.at("nested").toTupleRef().elements()[0], int64_t(2)}));
  const int64_t reuses = arena.reuses();
  const auto staged = stage_now(arena, live);
  EXPECT_EQ(arena.reuses(), reuses)
      << "a tuple cannot be changed in place: a new plain value in one rebuilds";
  EXPECT_EQ(staged.toGenericDict().at("nested").toTupleRef().elements()[1].toInt(), 2);
}

// flush.overlap on a reused result: what is deferrable and the version counters
// watched are this step's, so a parameter modified too early is still named.
TEST(Staging, AReusedResultWatchesThisStepsVersions) {
  const auto weight = torch::zeros({10});
  auto live = new_dict();
  live.insert("weight", weight);
  const std::unordered_set<const void*> step_only = {storage_of(weight)};
  StagingArena arena;
  for (int step = 0; step < 3; ++step) {
    const c10::IValue staged = arena.stage(live, step_only);
    const auto& copies = arena.copies();
    ASSERT_EQ(copies.size(), 1u);
    EXPECT_TRUE(copies[0].deferrable);
    EXPECT_EQ(copies[0].version, weight._version()) << "step " << step;
    DeferredCopies deferred(copies, staged);
    deferred.run_or_wait();
    EXPECT_EQ(deferred.modified_since_staging(), "") << "step " << step;
    weight.add_(1);  // the optimizer step, after the copy
    DeferredCopies late(copies, staged);
    late.run_or_wait();
    EXPECT_EQ(late.modified_since_staging(), "weight") << "step " << step;
  }
  EXPECT_EQ(arena.reuses(), 2);
  arena.stage(live, {});
  const auto& copies = arena.copies();
  EXPECT_FALSE(copies[0].deferrable) << "not deferrable when this step says so";
  EXPECT_FALSE(copies[0].counter.enabled());

  // Staged first when not deferrable, watched later: the warning still names it.
  StagingArena fresh;
  fresh.stage(live, {});
  const c10::IValue staged = fresh.stage(live, step_only);
  const auto& watched = fresh.copies();
  ASSERT_TRUE(watched[0].counter.enabled());
  weight.add_(1);
  DeferredCopies modified(watched, staged);
  modified.run_or_wait();
  EXPECT_EQ(modified.modified_since_staging(), "weight");

  // The same tensor given another version counter: the new one is watched.
  torch::autograd::impl::set_version_counter(weight, c10::VariableVersion(0));
  const c10::IValue recounted = fresh.stage(live, step_only);
  EXPECT_EQ(fresh.reuses(), 2);
  DeferredCopies untouched(fresh.copies(), recounted);
  untouched.run_or_wait();
  EXPECT_EQ(untouched.modified_since_staging(), "") << "not modified since it was staged";
  weight.add_(1);
  DeferredCopies counted(fresh.copies(), recounted);
  counted.run_or_wait();
  EXPECT_EQ(counted.modified_since_staging(), "weight") << "a modification seen by the tensor's counter now";
}

// flush.overlap with thousands of tensors: collecting the step-only storages
// walks them all, so a reused result keeps its copies' flags while the
// tracked objects say nothing changed (the same generation), and collects
// them again when the generation or the layout changes.
TEST(Staging, StepOnlyStoragesAreCollectedOnlyWhenTheirGenerationOrTheLayoutChanges) {
  const auto weight = torch::zeros({10});
  const auto buffer = torch::zeros({4});
  auto live = new_dict();
  live.insert("weight", weight);
  live.insert("buffer", buffer);
  StagingArena arena;
  int collected = 0;
  const auto collect = [&](std::unordered_set<const void*>& out) {
    ++collected;
    out.insert(storage_of(weight));
  };
  auto stage = [&](int64_t generation) {
    arena.stage(live, daemon::StepOnlyStorages(collect, generation));
    return arena.copies();
  };
  auto expect_flags = [&](const std::vector<StorageCopy>& copies, const std::string& when) {
    for (const auto& copy : copies) {
      const bool is_weight = copy.source.unsafeGetStorageImpl() == storage_of(weight);
      EXPECT_EQ(copy.deferrable, is_weight) << when;
      EXPECT_EQ(copy.counter.enabled(), is_weight) << when;
      if (is_weight) EXPECT_EQ(copy.version, weight._version()) << when;
    }
  };
  expect_flags(stage(1), "first");
  EXPECT_EQ(collected, 1);
  for (int step = 0; step < 3; ++step) {
    weight.add_(1);  // an optimizer step: the version watched is this step's
    expect_flags(stage(1), "reused, step " + std::to_string(step));
  }
  EXPECT_EQ(collected, 1) << "the same generation and layout: the flags are kept, nothing collected";
  EXPECT_EQ(arena.reuses(), 3);
  expect_flags(stage(2), "a new generation");
  EXPECT_EQ(collected, 2) << "a new generation collects them again";
  live.insert("extra", torch::zeros({2}));
  expect_flags(stage(2), "a new layout");
  EXPECT_EQ(collected, 3) << "a layout built anew collects them, whatever the generation";
  EXPECT_EQ(arena.reuses(), 4);
  const auto unknown = [&] {
    arena.stage(live, daemon::StepOnlyStorages(collect, daemon::StepOnlyStorages::kUnknown));
    return arena.copies();
  };
  expect_flags(unknown(), "unknown generation");
  expect_flags(unknown(), "unknown generation again");
  EXPECT_EQ(collected, 5) << "an unknown generation collects at every stage()";
}

// More than 32 MiB is copied by several threads, in 4 MiB pieces.
TEST(Staging, LargeCopiesSharedByThreadsCopyEveryByte) {
  auto live = new_dict();
  live.insert("big", torch::arange(24 << 20, torch::kInt32));          // 96 MiB
  live.insert("uneven", torch::arange((5 << 20) + 3, torch::kInt64));  // not whole pieces
  live.insert("strided", torch::arange(1 << 20, torch::kFloat32).view({1024, 1024}).t());
  live.insert("small", torch::full({7}, 3.0));
  StagingArena arena;
  const auto staged = stage_now(arena, live);
  for (const std::string key : {"big", "uneven", "strided", "small"}) {
    EXPECT_TRUE(torch::equal(tensor_at(staged, key), live.at(key).toTensor())) << key;
    EXPECT_NE(storage_of(tensor_at(staged, key)), storage_of(live.at(key).toTensor())) << key;
  }
  EXPECT_EQ(tensor_at(staged, "strided").strides(), live.at("strided").toTensor().strides());
}

// Past 32 MiB in all, copies store past the cache (streaming stores): every
// byte of many tensors of uneven sizes, none of them a whole number of cache lines.
TEST(Staging, ManyCopiesOfALargeStateCopyEveryByte) {
  auto live = new_dict();
  int64_t bytes = 0;
  for (int64_t i = 0; bytes < (40 << 20); ++i) {
    const int64_t numel = 4093 + 61 * (i % 97);  // odd counts of bytes
    live.insert("t" + std::to_string(i), torch::randint(0, 256, {numel}, torch::kUInt8));
    bytes += numel;
  }
  live.insert("tiny", torch::full({3}, 7, torch::kUInt8));
  StagingArena arena;
  const auto staged = stage_now(arena, live);
  for (const auto& entry : live) {
    const std::string key = entry.key().toStringRef();
    EXPECT_TRUE(torch::equal(tensor_at(staged, key), entry.value().toTensor())) << key;
  }
}

TEST(Staging, AChangedSizeReallocates) {
  auto live = new_dict();
  live.insert("a", torch::ones({10}));
  StagingArena arena;
  stage_now(arena, live);
  EXPECT_EQ(arena.allocations(), 1);
  EXPECT_EQ(arena.bytes(), 40u);

  live.insert_or_assign("a", torch::ones({25}));  // e.g. a resized embedding
  const auto staged = stage_now(arena, live);
  EXPECT_EQ(arena.allocations(), 2);
  EXPECT_EQ(arena.bytes(), 100u) << "the old buffer's bytes are no longer counted";
  EXPECT_EQ(tensor_at(staged, "a").numel(), 25);
  EXPECT_TRUE(torch::all(tensor_at(staged, "a") == 1).item<bool>());
}

TEST(Staging, TrimFreesBuffersTheLastStageDidNotUse) {
  auto both = new_dict();
  both.insert("a", torch::ones({10}));
  both.insert("b", torch::ones({30}));
  auto only_a = new_dict();
  only_a.insert("a", both.at("a"));
  StagingArena arena;
  stage_now(arena, both);
  EXPECT_EQ(arena.bytes(), 160u);
  stage_now(arena, only_a);
  EXPECT_EQ(arena.bytes(), 160u) << "stage() alone keeps unused buffers";
  arena.trim();
  EXPECT_EQ(arena.bytes(), 40u) << "trim() frees 'b', which the last stage() did not use";
  EXPECT_EQ(arena.allocations(), 2);
  stage_now(arena, only_a);
  EXPECT_EQ(arena.allocations(), 2) << "trim() keeps the buffers in use";
  stage_now(arena, both);
  EXPECT_EQ(arena.allocations(), 3) << "'b' needs a new buffer after trim()";
  EXPECT_EQ(arena.bytes(), 160u);
}

TEST(Staging, ReleaseFreesEveryBuffer) {
  auto live = new_dict();
  live.insert("a", torch::ones({10}));
  live.insert("b", torch::ones({3}));
  StagingArena arena;
  const auto staged = stage_now(arena, live);
  arena.release();
  EXPECT_EQ(arena.bytes(), 0u);
  EXPECT_TRUE(torch::all(tensor_at(staged, "a") == 1).item<bool>())
      << "a staged value keeps its own buffer alive";
  stage_now(arena, live);
  EXPECT_EQ(arena.allocations(), 4) << "after release() everything is allocated again";
  EXPECT_EQ(arena.bytes(), 52u);
}

// A container its maker vouches for (StableContainers: a module's captured
// state dict, an optimizer's per-parameter state) is not walked again while
// its generation stays: only its tensors are checked, so a tensor resized in
// place still builds the result anew, and a new generation walks it again
// (bringing its plain values up to date).
TEST(Staging, AStableContainerIsCheckedByItsTensorsWhileItsGenerationStays) {
  auto inner = new_dict();
  const auto weight = torch::ones({4});
  inner.insert("weight", weight);
  inner.insert("lr", 0.1);
  auto live = new_dict();
  live.insert("model", inner);
  live.insert("epoch", int64_t{3});
  StagingArena arena;
  daemon::StableContainers stable;
  stable.add(inner, 1);
  auto stage = [&](const daemon::StableContainers& containers) {
    const c10::IValue staged = arena.stage(live, {}, containers);
    daemon::perform_copies(arena.copies());
    return dict_at(staged, "model");
  };
  stage(stable);
  EXPECT_EQ(arena.stable_skips(), 0) << "built: nothing to skip yet";
  weight.fill_(3);
  live.insert_or_assign("epoch", int64_t{4});
  c10::IValue model = stage(stable);
  EXPECT_EQ(arena.reuses(), 1);
  EXPECT_EQ(arena.stable_skips(), 1) << "the stable dict was checked by its tensors alone";
  EXPECT_TRUE(torch::all(tensor_at(model, "weight") == 3).item<bool>()) << "its tensors are copied as ever";

  inner.insert_or_assign("lr", 0.2);  // its maker moves the generation on with any such change
  daemon::StableContainers next;
  next.add(inner, 2);
  model = stage(next);
  EXPECT_EQ(arena.reuses(), 2);
  EXPECT_EQ(arena.stable_skips(), 1) << "a new generation: walked again";
  EXPECT_EQ(model.toGenericDict().at("lr").toDouble(), 0.2);
  stage(next);
  EXPECT_EQ(arena.stable_skips(), 2) << "and recorded for the next one";

  weight.resize_({8});
  weight.fill_(5);
  model = stage(next);
  EXPECT_EQ(arena.reuses(), 3) << "a tensor of another size builds it anew, generation or not";
  EXPECT_EQ(tensor_at(model, "weight").sizes(), weight.sizes());
  EXPECT_TRUE(torch::all(tensor_at(model, "weight") == 5).item<bool>());
}

// The check of a stable container compares each tensor with a record of how
// its staged view was made: a tensor reshaped in place on the same storage
// (same bytes, another size, stride or offset) is staged anew.
TEST(Staging, AStableContainersTensorReshapedInPlaceIsStagedAnew) {
  const auto matrix = torch::arange(9, torch::kFloat32).view({3, 3}).clone();
  const auto flat = torch::arange(8, torch::kFloat32);
  const auto shifted = torch::arange(8, torch::kFloat32);
  auto inner = new_dict();
  inner.insert("matrix", matrix);
  inner.insert("flat", flat);
  inner.insert("shifted", shifted);
  auto live = new_dict();
  live.insert("model", inner);
  StagingArena arena;
  daemon::StableContainers stable;
  stable.add(inner, 1);
  auto stage = [&] {
    const c10::IValue staged = arena.stage(live, {}, stable);
    daemon::perform_copies(arena.copies());
    return dict_at(staged, "model");
  };
  stage();
  stage();
  ASSERT_EQ(arena.stable_skips(), 1) << "checked by its tensors alone while nothing changed";
  auto expect_staged_like_live = [&](const c10::IValue& model, const std::string& what) {
    for (const std::string key : {"matrix", "flat", "shifted"}) {
      const at::Tensor live_tensor = inner.at(key).toTensor(), staged = tensor_at(model, key);
      EXPECT_EQ(staged.dtype(), live_tensor.dtype()) << what << ": " << key;
      EXPECT_EQ(staged.sizes(), live_tensor.sizes()) << what << ": " << key;
      EXPECT_EQ(staged.strides(), live_tensor.strides()) << what << ": " << key;
      EXPECT_EQ(staged.storage_offset(), live_tensor.storage_offset()) << what << ": " << key;
      EXPECT_TRUE(torch::equal(staged, live_tensor)) << what << ": " << key;
    }
  };
  const int64_t reuses = arena.reuses();

  matrix.t_();  // only the strides change
  expect_staged_like_live(stage(), "transposed");
  EXPECT_EQ(arena.reuses(), reuses) << "transposed: built anew";
  stage();
  flat.as_strided_({3}, {2}, 1);  // another size, stride and offset on the same 32 bytes
  expect_staged_like_live(stage(), "restrided");
  EXPECT_EQ(arena.reuses(), reuses + 1) << "restrided: built anew";
  stage();
  shifted.set_(shifted.storage(), 2, {3}, {1});  // only the offset moves
  expect_staged_like_live(stage(), "offset");
  EXPECT_EQ(arena.reuses(), reuses + 2) << "another offset: built anew";
  stage();
  EXPECT_EQ(arena.reuses(), reuses + 3) << "and reused again once it stays";
}

// A container whose generation moves at every snapshot (RMSprop's
// per-parameter state holds its step count as a number) is walked every
// time, its plain values up to date, and not listed for a check it never
// gets; once its generation stays, it is checked by its tensors again.
TEST(Staging, AContainerWhoseGenerationMovesAtEverySnapshotIsWalkedEveryTime) {
  auto inner = new_dict();
  inner.insert("square_avg", torch::ones({4}));
  inner.insert("step", int64_t{0});
  auto live = new_dict();
  live.insert("state", inner);
  StagingArena arena;
  auto stage = [&](int64_t generation) {
    daemon::StableContainers stable;
    stable.add(inner, generation);
    const c10::IValue staged = arena.stage(live, {}, stable);
    daemon::perform_copies(arena.copies());
    return dict_at(staged, "state").toGenericDict().at("step").toInt();
  };
  for (int64_t step = 1; step <= 4; ++step) {
    inner.insert_or_assign("step", step);
    EXPECT_EQ(stage(step), step);
  }
  EXPECT_EQ(arena.reuses(), 3);
  EXPECT_EQ(arena.stable_skips(), 0) << "walked at every snapshot";
  EXPECT_EQ(stage(4), 4);
  EXPECT_EQ(arena.stable_skips(), 0) << "its generation stayed once: walked, and listed for the next";
  EXPECT_EQ(stage(4), 4);
  EXPECT_EQ(arena.stable_skips(), 1);
}

// An optimizer's per-parameter state stays a stable container while steps
// only write into its tensors; replacing a state tensor with another object
// moves its generation on, so the next snapshot copies the new tensor, not
// the one the last walk met.
TEST(Staging, AnOptimizersStateIsWalkedAgainWhenAStateTensorIsReplaced) {
  auto weight = torch::ones({3}, torch::requires_grad());
  torch::optim::Adam optimizer({weight}, torch::optim::AdamOptions(0.1));
  auto step = [&] {
    optimizer.zero_grad();
    (weight * weight).sum().backward();
    optimizer.step();
  };
  step();
  auto tracked = daemon::track_optimizer(optimizer);
  StagingArena arena;
  auto snapshot = [&] {
    const c10::IValue live = tracked->capture();
    daemon::StableContainers stable;
    tracked->stable_containers(live, stable);
    const c10::IValue staged = arena.stage(live, {}, stable);
    daemon::perform_copies(arena.copies());
    return staged.toGenericDict().at("state").toGenericDict().at(0).toGenericDict().at("exp_avg").toTensor();
  };
  snapshot();
  step();
  auto& state = static_cast<torch::optim::AdamParamState&>(*optimizer.state().begin()->second);
  EXPECT_TRUE(torch::equal(snapshot(), state.exp_avg()));
  EXPECT_EQ(arena.stable_skips(), 1) << "a step only wrote into the state's tensors";

  state.exp_avg(torch::full({3}, 7.0f));
  EXPECT_TRUE(torch::equal(snapshot(), torch::full({3}, 7.0f))) << "the replacing tensor is the one copied";
  EXPECT_EQ(arena.stable_skips(), 1) << "walked again";
  step();
  EXPECT_TRUE(torch::equal(snapshot(), state.exp_avg()));
  EXPECT_EQ(arena.stable_skips(), 2);
}

TEST(Staging, OnlyDenseTensorsCanBeStaged) {
  auto live = new_dict();
  auto inner = new_dict();
  inner.insert("embedding", torch::eye(3).to_sparse());
  live.insert("model", inner);
  StagingArena arena;
  try {
    arena.stage(live, {});
    ADD_FAILURE() << "a sparse tensor was staged";
  } catch (const std::exception& e) {
    EXPECT_NE(
        std::string(e.what()).find("cannot snapshot 'model/embedding': only dense tensors can be saved"),
        std::string::npos)
        << e.what();
  }
  auto in_list = new_dict();
  in_list.insert("layers", c10::List<at::Tensor>({torch::ones({2}), torch::eye(2).to_sparse()}));
  try {
    arena.stage(in_list, {});
    ADD_FAILURE() << "a sparse tensor in a list was staged";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("cannot snapshot 'layers/1'"), std::string::npos) << e.what();
  }
}

// A dict key with a '/' in it can spell the same path as a nested dict: the
// two storages still get a buffer each.
TEST(Staging, DistinctStoragesWhosePathsCollideStayDistinct) {
  auto live = new_dict();
  auto nested = new_dict();
  live.insert("a/b", torch::full({4}, 1.0));
  nested.insert("b", torch::full({4}, 2.0));
  live.insert("a", nested);
  StagingArena arena;
  const auto staged = stage_now(arena, live);
  const at::Tensor flat = tensor_at(staged, "a/b");
  const at::Tensor inner = tensor_at(staged.toGenericDict().at("a"), "b");
  EXPECT_NE(storage_of(flat), storage_of(inner)) << "two live storages were staged into one buffer";
  EXPECT_TRUE(torch::all(flat == 1).item<bool>()) << "'a/b' staged as " << flat;
  EXPECT_TRUE(torch::all(inner == 2).item<bool>()) << "'a'/'b' staged as " << inner;
}

TEST(Staging, StorageBytesCountsEachStorageOnce) {
  const auto big = torch::zeros({1000});  // 4000 bytes
  auto value = new_dict();
  value.insert("first", big.slice(0, 0, 10));  // a small view counts its whole storage
  value.insert("second", big.slice(0, 500, 510));
  value.insert("list", c10::List<at::Tensor>({big, torch::zeros({3}, torch::kFloat64)}));
  value.insert("tuple",
               c10::ivalue::Tuple::create({torch::zeros({2}, torch::kInt8), at::Tensor(), std::string("x")}));
  value.insert("scalar", 2.5);
  EXPECT_EQ(daemon::storage_bytes(value), 4000u + 24u + 2u);
  EXPECT_EQ(daemon::storage_bytes(c10::IValue(int64_t(3))), 0u);
  EXPECT_EQ(daemon::storage_bytes(big.view({10, 100})), 4000u);
}

// ---- DeferredCopies (flush.overlap) ----

StorageCopy copy_of(const at::Tensor& source, at::Tensor& destination) {
  destination = torch::zeros({static_cast<int64_t>(source.storage().nbytes())}, torch::kUInt8);
  StorageCopy copy;
  copy.source = source.storage();
  copy.destination = destination.storage();
  copy.into = destination.data_ptr();
  copy.bytes = source.storage().nbytes();
  copy.deferrable = true;
  return copy;
}

TEST(DeferredCopies, RunsOnceWhoeverAsksFirst) {
  const auto source = torch::full({256}, 1.0f);
  at::Tensor destination;
  const std::vector<StorageCopy> copies = {copy_of(source, destination)};
  DeferredCopies deferred(copies, c10::IValue());
  std::vector<std::thread> waiters;
  std::atomic<int> returned{0};
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&] {
      deferred.run_or_wait();
      ++returned;
    });
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(returned.load(), 4);
  const auto as_floats = [&] { return destination.view(torch::kFloat32); };
  EXPECT_TRUE(torch::equal(as_floats(), source)) << "every waiter returns after the copy is complete";

  source.fill_(2.0f);
  deferred.run_or_wait();
  EXPECT_TRUE(torch::all(as_floats() == 1.0f).item<bool>()) << "a second call must not copy again";
  EXPECT_FALSE(deferred.discarded());
  deferred.discard();
  EXPECT_TRUE(deferred.discarded());
}

TEST(DeferredCopies, TheCopyErrorReachesEveryWaiter) {
  const auto source = torch::full({64}, 1.0f);
  at::Tensor destination;
  std::vector<StorageCopy> copies = {copy_of(source, destination)};
  StorageCopy failing;  // a device copy with no destination: it throws
  failing.source = torch::ones({8}).storage();
  failing.bytes = failing.source.nbytes();
  failing.host = false;
  failing.deferrable = true;
  copies.push_back(failing);
  DeferredCopies deferred(copies, c10::IValue());

  std::vector<std::string> errors(3);
  std::vector<std::thread> waiters;
  for (size_t i = 0; i < errors.size(); ++i) {
    waiters.emplace_back([&, i] {
      try {
        deferred.run_or_wait();
        errors[i] = "<no exception>";
      } catch (const std::exception& e) {
        errors[i] = std::string("error: ") + e.what();
      }
    });
  }
  for (auto& t : waiters) t.join();
  for (const auto& e : errors) {
    EXPECT_EQ(e.rfind("error: ", 0), 0u) << "every waiter must see the copy's error, got " << e;
    EXPECT_EQ(e, errors[0]) << "the same error";
  }
  EXPECT_TRUE(torch::all(destination.view(torch::kFloat32) == 1.0f).item<bool>()) << "the first copy ran";

  source.fill_(5.0f);
  EXPECT_THROW(deferred.run_or_wait(), std::exception) << "a later caller still gets the error";
  EXPECT_TRUE(torch::all(destination.view(torch::kFloat32) == 1.0f).item<bool>())
      << "and nothing is copied again";
}

TEST(Staging, OverlapDefersParameterCopiesAndCopiesBuffersAtOnce) {
  Model model;
  model.set_all(1);
  auto tracked = daemon::track_module(model);
  const c10::IValue live = tracked->capture();
  std::unordered_set<const void*> step_only;
  tracked->step_only_storages(live, step_only);
  daemon::StagingArena arena;
  const c10::IValue staged = arena.stage(live, step_only);
  const auto& copies = arena.copies();
  ASSERT_EQ(copies.size(), 3u);
  // Fresh staging buffers hold whatever the allocator gave back (once, a freed
  // tensor of ones): zeroed, so that "not copied yet" shows.
  for (auto& copy : copies) std::memset(copy.into, 0, copy.bytes);
  std::vector<daemon::StorageCopy> now, later;
  for (auto& copy : copies) (copy.deferrable ? later : now).push_back(copy);
  EXPECT_EQ(now.size(), 1u) << "the buffer 'running'";
  EXPECT_EQ(later.size(), 2u) << "the parameters 'weight' and 'bias'";

  daemon::perform_copies(now);
  const auto staged_weight = dict_at(staged, "weight").toTensor();
  const auto staged_running = dict_at(staged, "running").toTensor();
  EXPECT_TRUE(torch::all(staged_running == 1).item<bool>()) << "buffers are staged at the boundary";
  EXPECT_FALSE(torch::equal(staged_weight, model.weight)) << "parameters are not copied yet";
  {
    torch::NoGradGuard no_grad;
    model.running.fill_(2);  // the next forward pass
  }
  daemon::DeferredCopies deferred(later, staged);
  deferred.run_or_wait();  // before_optimizer_step()
  EXPECT_TRUE(torch::all(staged_weight == 1).item<bool>());
  EXPECT_TRUE(torch::all(staged_running == 1).item<bool>())
      << "the staged buffer keeps the boundary's values";
}

}  // namespace
}  // namespace autosnap
