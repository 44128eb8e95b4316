// Resumable samplers: a run snapshotted mid-epoch, killed and resumed sees
// exactly the batches an uninterrupted run sees, with any number of loader
// workers, and a restore of the random generators does not change an epoch's order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "autosnap/autosnap.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::make_config;
using testing::TempDir;

// Sample i is the tensor {i}: a batch shows which indices the loader drew.
struct IndexDataset : torch::data::datasets::Dataset<IndexDataset> {
  explicit IndexDataset(size_t n) : n_(n) {}
  torch::data::Example<> get(size_t index) override {
    return {torch::tensor({static_cast<int64_t>(index)}), torch::zeros({1})};
  }
  torch::optional<size_t> size() const override { return n_; }
  size_t n_;
};

constexpr size_t kSamples = 23;  // batches of 4: the last of each epoch has 3
constexpr size_t kBatch = 4;
constexpr int64_t kEpochs = 3;

using Batches = std::vector<std::vector<int64_t>>;
using MakeSampler = std::function<std::unique_ptr<ResumableSampler>()>;

std::vector<int64_t> indices_of(const std::vector<torch::data::Example<>>& batch) {
  std::vector<int64_t> out;
  for (const auto& example : batch) out.push_back(example.data.item<int64_t>());
  return out;
}

// When snapshots are taken: after every step, or only after each epoch's on_epoch_end.
enum class Snapshots { kEveryStep, kAtEpochEnd };

// An epoch × batch loop, as README shows it. Stops (like a kill) after
// `stop_after_steps` steps of this run (with kAtEpochEnd: after the
// on_epoch_end that follows them); returns the batches it trained on.
Batches train(const std::string& dir, const MakeSampler& make_sampler, size_t workers,
              int64_t stop_after_steps, std::optional<ResumePoint>* resumed_out = nullptr,
              Snapshots snapshots = Snapshots::kEveryStep) {
  torch::manual_seed(1234);  // the same start in every run; a restore then sets the generators
  auto sampler = make_sampler();
  Snapshotter snap(
      make_config(dir, std::string(snapshots == Snapshots::kEveryStep
                                       ? "triggers: {every_steps: 1, on_train_end: false}\n"
                                       : "triggers: {on_epoch_end: true, on_train_end: false}\n") +
                           "retention: {keep_last: 0}\n"));
  snap.track("data", *sampler);
  auto resumed = snap.on_train_start();
  if (resumed_out) *resumed_out = resumed;
  // The loader gets a copy; both share one position.
  auto loader = torch::data::make_data_loader(
      IndexDataset(kSamples), *sampler, torch::data::DataLoaderOptions().batch_size(kBatch).workers(workers));
  Batches seen;
  int64_t step = resumed ? resumed->step + 1 : 0;
  for (int64_t epoch = resumed ? resumed->next_epoch() : 0; epoch < kEpochs; ++epoch) {
    snap.on_epoch_start(epoch);
    for (auto& batch : *loader) {
      seen.push_back(indices_of(batch));
      torch::randn({3});  // training draws from the global generator
      snap.on_step_end(step++);
      if (snapshots == Snapshots::kEveryStep && static_cast<int64_t>(seen.size()) == stop_after_steps) {
        snap.wait_until_finished();
        return seen;  // the loader still has batches prefetched: they were never trained on
      }
    }
    snap.on_epoch_end(epoch);
    if (snapshots == Snapshots::kAtEpochEnd && static_cast<int64_t>(seen.size()) == stop_after_steps) {
      snap.wait_until_finished();
      return seen;
    }
  }
  snap.close();
  return seen;
}

void expect_resume_matches(const MakeSampler& make_sampler, size_t workers, int64_t stop_after) {
  TempDir whole_dir;
  const Batches whole = train(whole_dir.path(), make_sampler, workers, -1);
  const size_t per_epoch = whole.size() / kEpochs;
  ASSERT_EQ(whole.size() % kEpochs, 0u);
  ASSERT_LT(whole[per_epoch - 1].size(), kBatch) << "the test wants a last partial batch";

  TempDir dir;
  Batches run = train(dir.path(), make_sampler, workers, stop_after);
  ASSERT_EQ(run.size(), static_cast<size_t>(stop_after));
  std::optional<ResumePoint> resumed;
  const Batches rest = train(dir.path(), make_sampler, workers, -1, &resumed);
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, stop_after - 1);
  EXPECT_EQ(resumed->epoch, (stop_after - 1) / static_cast<int64_t>(per_epoch));
  EXPECT_EQ(resumed->batch, (stop_after - 1) % static_cast<int64_t>(per_epoch) + 1);
  EXPECT_FALSE(resumed->epoch_ended);
  run.insert(run.end(), rest.begin(), rest.end());
  EXPECT_EQ(run, whole) << "stopped after " << stop_after << " steps, " << workers << " workers";
}

const MakeSampler kRandom = [] { return std::make_unique<ResumableRandomSampler>(kSamples); };
const MakeSampler kSequential = [] { return std::make_unique<ResumableSequentialSampler>(kSamples); };
const MakeSampler kDistributed = [] {
  return std::make_unique<ResumableDistributedSampler>(kSamples, 4, 1);  // rank 1 of 4: 6 samples per epoch
};

class SamplerResume : public ::testing::TestWithParam<size_t> {};

TEST_P(SamplerResume, RandomContinuesWithTheNextUnseenBatch) {
  expect_resume_matches(kRandom, GetParam(), 8);  // epoch 1, batch 2 of 6
}

TEST_P(SamplerResume, RandomResumedAfterAnEpochsLastBatch) {
  expect_resume_matches(kRandom, GetParam(), 12);  // the last (partial) batch of epoch 1
}

// The snapshot taken by on_epoch_end: the resumed loop starts the next epoch,
// and so does the sampler (not the ended epoch again, with nothing left in it).
TEST_P(SamplerResume, RandomResumedFromAnEpochEndSnapshotStartsTheNextEpoch) {
  TempDir whole_dir;
  const Batches whole = train(whole_dir.path(), kRandom, GetParam(), -1);
  const int64_t per_epoch = static_cast<int64_t>(whole.size()) / kEpochs;
  TempDir dir;
  Batches run = train(dir.path(), kRandom, GetParam(), per_epoch, nullptr, Snapshots::kAtEpochEnd);
  std::optional<ResumePoint> resumed;
  const Batches rest = train(dir.path(), kRandom, GetParam(), -1, &resumed, Snapshots::kAtEpochEnd);
  ASSERT_TRUE(resumed);
  EXPECT_TRUE(resumed->epoch_ended);
  EXPECT_EQ(resumed->next_epoch(), 1);
  run.insert(run.end(), rest.begin(), rest.end());
  EXPECT_EQ(run, whole);
}

TEST_P(SamplerResume, SequentialContinuesWithTheNextUnseenBatch) {
  expect_resume_matches(kSequential, GetParam(), 9);
}

TEST_P(SamplerResume, DistributedContinuesWithTheNextUnseenBatch) {
  expect_resume_matches(kDistributed, GetParam(), 3);  // epoch 1, batch 1 of 2 (4 + 2 samples)
}

INSTANTIATE_TEST_SUITE_P(Workers, SamplerResume, ::testing::Values(0, 1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "Workers"; });

TEST(ResumableSampler, EpochOrdersArePythonsRandpermOfSeedPlusEpoch) {
  ResumableRandomSampler sampler(10, 42);
  for (int i = 0; i < 4; ++i) sampler.reset();                          // epochs 0, 1, 2, 3
  const std::vector<size_t> expected = {7, 6, 5, 3, 4, 9, 0, 8, 2, 1};  // torch.randperm(10, manual_seed(45))
  EXPECT_EQ(sampler.next(10).value(), expected);
  EXPECT_EQ(sampler.epoch(), 3);

  // Python: DistributedSampler(range(10), num_replicas=3, rank=1, seed=42); set_epoch(3)
  ResumableDistributedSampler part(10, 3, 1, {/*shuffle=*/true, /*seed=*/42});
  for (int i = 0; i < 4; ++i) part.reset();
  EXPECT_EQ(part.next(100).value(), (std::vector<size_t>{6, 4, 8, 7}));
}

TEST(ResumableSampler, TheRandomGeneratorDoesNotChangeAnEpochsOrder) {
  torch::manual_seed(5);
  ResumableRandomSampler a(50);
  torch::manual_seed(5);
  ResumableRandomSampler b(50);
  a.reset();
  torch::manual_seed(999);  // what a restore of the generators does between epochs
  b.reset();
  EXPECT_EQ(a.next(50).value(), b.next(50).value());
}

TEST(ResumableSampler, CountsBatchesConsumedNotFetched) {
  ResumableRandomSampler sampler(20, 1);
  ResumableRandomSampler loader_copy = sampler;  // what make_data_loader holds
  loader_copy.reset();
  loader_copy.next(4);
  loader_copy.next(4);
  loader_copy.next(4);  // prefetched, never trained on
  sampler.batch_consumed();
  sampler.batch_consumed();
  EXPECT_EQ(sampler.batches_consumed(), 2);
  const c10::IValue saved = sampler.state();
  EXPECT_EQ(dict_at(saved, "position").toInt(), 8);
  EXPECT_EQ(dict_at(saved, "epoch").toInt(), 0);

  ResumableRandomSampler restored(20, 77);
  restored.restore(saved);
  restored.reset();
  ResumableRandomSampler replay(20, 1);
  replay.reset();
  replay.next(8);
  EXPECT_EQ(restored.next(4).value(), replay.next(4).value()) << "the third batch, not the fourth";
  EXPECT_EQ(restored.epoch(), 0);
  restored.reset();
  EXPECT_EQ(restored.epoch(), 1) << "after the resumed epoch, the next one";
}

TEST(ResumableSampler, ARestoreIntoADifferentSamplerNamesWhatDiffers) {
  ResumableRandomSampler saved_by(20, 1);
  saved_by.reset();
  const c10::IValue saved = saved_by.state();
  auto message_of = [&](ResumableSampler& into) {
    try {
      into.restore(saved);
    } catch (const StateMismatch& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ResumableRandomSampler other_size(21, 1);
  EXPECT_NE(message_of(other_size).find("dataset of 20 samples, this sampler has 21"), std::string::npos);
  ResumableSequentialSampler other_kind(20);
  EXPECT_NE(message_of(other_kind).find("saved by a 'random' sampler, restored into a 'sequential' one"),
            std::string::npos);
  EXPECT_EQ(other_kind.epoch(), -1) << "a failed restore changes nothing";

  ResumableDistributedSampler rank0(20, 2, 0);
  rank0.reset();
  ResumableDistributedSampler rank1(20, 2, 1);
  try {
    rank1.restore(rank0.state());
    FAIL() << "restoring rank 0's position into rank 1 must fail";
  } catch (const StateMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("saved as rank 0 of 2, restored as rank 1 of 2"), std::string::npos);
  }
  EXPECT_THROW(ResumableDistributedSampler(20, 2, 2), Error);
}

// distributed.replicated: a job resumed with another number of ranks splits
// the rest of the epoch among its new ranks: every sample of the epoch is seen once.
TEST(ResumableSampler, DistributedResumedWithAnotherNumberOfRanksSplitsTheRestOfTheEpoch) {
  constexpr size_t kSize = 24;
  std::multiset<size_t> seen;
  c10::IValue saved;
  for (size_t rank = 0; rank < 2; ++rank) {
    ResumableDistributedSampler old_rank(kSize, 2, rank, {true, 9});
    old_rank.reset();
    for (int b = 0; b < 2; ++b) {
      const auto batch = old_rank.next(3).value();
      seen.insert(batch.begin(), batch.end());
      old_rank.batch_consumed();
    }
    old_rank.next(3);                         // prefetched, not consumed
    if (rank == 0) saved = old_rank.state();  // replicated: every new rank reads rank 0's shard
  }
  std::vector<c10::IValue> new_states;
  for (size_t rank = 0; rank < 3; ++rank) {
    ResumableDistributedSampler new_rank(kSize, 3, rank, {true, 1234});  // the seed comes from the snapshot
    new_rank.restore(saved);
    new_rank.reset();
    EXPECT_EQ(new_rank.epoch(), 0);
    auto part = new_rank.next(100).value();
    EXPECT_EQ(part.size(), 4u) << "12 samples left, 3 ranks";
    seen.insert(part.begin(), part.end());
    new_rank.batch_consumed();
    new_states.push_back(new_rank.state());
    new_rank.reset();  // the next epoch: a plain split among 3 ranks
    ResumableDistributedSampler fresh(kSize, 3, rank, {true, 9});
    fresh.reset();
    fresh.reset();
    EXPECT_EQ(new_rank.next(100).value(), fresh.next(100).value());
  }
  std::multiset<size_t> expected;
  for (size_t i = 0; i < kSize; ++i) expected.insert(i);
  EXPECT_EQ(seen, expected) << "every sample of the epoch once, none twice";

  // The re-split epoch is saved as such: the same ranks resume it where they were.
  ResumableDistributedSampler again(kSize, 3, 1, {true, 9});
  again.restore(new_states[1]);
  again.reset();
  EXPECT_EQ(again.next(100), torch::nullopt) << "rank 1 had consumed its part of the re-split epoch";
  EXPECT_EQ(again.epoch(), 0);
}

TEST(ResumableSampler, AReSplitEpochWithNothingLeftGoesThroughAFile) {
  ResumableDistributedSampler old_rank(8, 2, 0, {true, 3});
  old_rank.reset();
  old_rank.next(4);
  old_rank.batch_consumed();  // rank 0 consumed its whole part: so did rank 1
  ResumableDistributedSampler new_rank(8, 4, 2, {true, 3});
  new_rank.restore(old_rank.state());
  TempDir dir;
  save(new_rank.state(), dir.file("state.pt"));  // rest_of_epoch: [] (reads back as an untyped list)
  ResumableDistributedSampler again(8, 4, 2, {true, 3});
  again.restore(load(dir.file("state.pt")));
  again.reset();
  EXPECT_EQ(again.next(4), torch::nullopt);
  again.reset();
  EXPECT_EQ(again.epoch(), 1);
  EXPECT_EQ(again.next(4)->size(), 2u) << "the next epoch: 8 samples over 4 ranks";
}

TEST(ResumableSampler, BadSettingsAndStatesAreClearErrors) {
  EXPECT_THROW(ResumableRandomSampler(10, uint64_t{1} << 63), Error);
  ResumableDistributedSampler shuffled(10, 2, 0);
  shuffled.reset();
  ResumableDistributedSampler in_order(10, 2, 0, {/*shuffle=*/false});
  try {
    in_order.restore(shuffled.state());
    FAIL() << "a shuffled position must not be restored into an unshuffled sampler";
  } catch (const StateMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("saved with shuffle=true, this sampler has shuffle=false"),
              std::string::npos)
        << e.what();
  }
  ResumableSequentialSampler sampler(10);
  sampler.reset();
  sampler.next(3);
  sampler.batch_consumed();
  ResumableSequentialSampler resumed(10);
  resumed.restore(sampler.state());
  EXPECT_THROW(resumed.reset(12), Error) << "a restored position belongs to a dataset of 10";
}

TEST(ResumableSampler, TorchSaveAndLoadOfTheSampler) {
  ResumableSequentialSampler sampler(10);
  sampler.reset();
  sampler.next(3);
  sampler.batch_consumed();
  TempDir dir;
  const std::string path = dir.path() + "/sampler.pt";
  torch::serialize::OutputArchive out;
  sampler.save(out);
  out.save_to(path);
  ResumableSequentialSampler loaded(10);
  torch::serialize::InputArchive in;
  in.load_from(path);
  loaded.load(in);
  loaded.reset();
  EXPECT_EQ(loaded.next(3).value(), (std::vector<size_t>{3, 4, 5}));
}

// Python reads the data position from the shard and, with the documented
// formula, names the batch a resumed run trains on next.
TEST(Snapshotter, PythonReadsTheDataPositionAndFindsTheNextBatch) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  ResumableRandomSampler sampler(kSamples, 31);
  {
    Snapshotter snap(make_config(dir.path()));
    snap.track("data", sampler);
    ResumableRandomSampler loader_copy = sampler;
    loader_copy.reset();
    loader_copy.reset();  // epoch 1
    for (int64_t step = 0; step < 3; ++step) {
      loader_copy.next(kBatch);
      snap.on_step_end(step);
    }
    loader_copy.next(kBatch);  // prefetched, never trained on
    snap.close();              // on_train_end: a snapshot of step 2
  }
  const auto result = testing::run_python_code(
      "import sys, torch\n"
      "shard = torch.load(sys.argv[1] + '/step-000000000002/rank-00000.pt')\n"
      "d = shard['data']\n"
      "order = torch.randperm(d['size'], generator=torch.Generator().manual_seed(d['seed'] + d['epoch']))\n"
      "print(d['kind'], d['epoch'], d['batches'], d['position'])\n"
      "print(' '.join(str(int(i)) for i in order[d['position']:d['position'] + 4]))\n",
      dir.path());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  ResumableRandomSampler resumed(kSamples, 7);
  {
    Snapshotter snap(make_config(dir.path()));
    snap.track("data", resumed);
    ASSERT_TRUE(snap.on_train_start());
  }
  resumed.reset();
  std::string next;
  const auto batch = resumed.next(kBatch).value();
  for (size_t i : batch) next += (next.empty() ? "" : " ") + std::to_string(i);
  EXPECT_EQ(result.output, "random 1 3 12\n" + next + "\n");
}

TEST(Snapshotter, ASamplerRestoreMismatchNamesTheTrackedEntry) {
  TempDir dir;
  {
    ResumableRandomSampler sampler(10, 1);
    Snapshotter snap(make_config(dir.path()));
    snap.track("data", sampler);
    sampler.reset();
    sampler.next(2);
    snap.on_step_end(0);
    snap.close();
  }
  ResumableRandomSampler bigger(11, 1);
  Snapshotter snap(make_config(dir.path(), "restore: {max_attempts: 1}\n"));
  snap.track("data", bigger);
  try {
    snap.on_train_start();
    FAIL() << "a sampler over another dataset size must not be restored";
  } catch (const StateMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("'data': sampler state: saved for a dataset of 10 samples"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace autosnap
