// Replicas of the memory tier (daemon/memory_replicas.h): who holds whose
// copies, and a snapshot packed on one rank and committed on another,
// checked against its manifest as it is written. The transfers themselves
// run over real Gloo in ClusterJob.WithReplicas* and the multi-node script.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "autosnap/errors.h"
#include "autosnap/tools.h"
#include "daemon/memory_replicas.h"
#include "daemon/memory_tier.h"
#include "store/snapshot_writer.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using daemon::ReplicaPlacement;
using testing::TempDir;
using Ranks = std::vector<std::vector<int>>;

TEST(MemoryReplicas, EachRanksCopiesGoToTheSameLocalRankOfTheNextNodes) {
  const auto two_by_two = ReplicaPlacement::ring({0, 0, 1, 1}, 1);
  EXPECT_EQ(two_by_two.holders, (Ranks{{2}, {3}, {0}, {1}}));
  EXPECT_EQ(two_by_two.held, (Ranks{{2}, {3}, {0}, {1}}));

  const auto three_nodes = ReplicaPlacement::ring({0, 1, 2}, 2);
  EXPECT_EQ(three_nodes.holders, (Ranks{{1, 2}, {2, 0}, {0, 1}}));
  EXPECT_EQ(three_nodes.held, (Ranks{{1, 2}, {0, 2}, {0, 1}}));

  // Uneven nodes: the one rank of node 1 holds all of node 0's copies.
  const auto uneven = ReplicaPlacement::ring({0, 0, 0, 1}, 1);
  EXPECT_EQ(uneven.holders, (Ranks{{3}, {3}, {3}, {0}}));
  EXPECT_EQ(uneven.held, (Ranks{{3}, {}, {}, {0, 1, 2}}));
}

TEST(MemoryReplicas, NoCopyIsPlacedOnTheSameNodeAndNoneTwiceOnOneNode) {
  EXPECT_EQ(ReplicaPlacement::ring({0, 0, 0}, 1).holders, (Ranks{{}, {}, {}})) << "one node: no other node";
  EXPECT_EQ(ReplicaPlacement::ring({0, 1}, 5).holders, (Ranks{{1}, {0}}))
      << "at most one copy per other node";
  EXPECT_EQ(ReplicaPlacement::ring({0}, 1).holders, (Ranks{{}}));
}

// A one-rank snapshot of `step` in `store`, labelled as a memory snapshot of rank 2 of 4.
void commit_memory_snapshot(SnapshotStore& store, int64_t step) {
  auto writer = SnapshotWriter::begin(store, step);
  writer->write_shard(0, c10::IValue(torch::full({64, 64}, static_cast<float>(step))));
  Manifest manifest;
  manifest.epoch = 3;
  manifest.batch = 17;
  manifest.reason = "memory";
  manifest.job = daemon::MemoryTier::labels({{"slurm_job_id", "77"}}, 2, 4);
  writer->commit(manifest);
}

TEST(MemoryReplicas, APackedSnapshotIsCommittedElsewhereAsItWas) {
  TempDir dir;
  auto source = SnapshotStore::open_for_writing(dir.file("rank-00002"), /*fsync=*/false);
  auto holder = SnapshotStore::open_for_writing(dir.file("replicas"), /*fsync=*/false);
  commit_memory_snapshot(*source, 41);
  const std::string packed = daemon::pack_snapshot(*source, 41);

  EXPECT_EQ(daemon::commit_packed_snapshot(packed, *holder), 41);
  const Snapshot copy = holder->open(41);
  EXPECT_TRUE(copy.verify().ok) << copy.verify().problem;
  EXPECT_TRUE(daemon::MemoryTier::taken_by(copy.manifest(), 2, 4)) << "the labels say whose it is";
  EXPECT_EQ(copy.manifest().batch, 17);
  const std::string shard = shard_file_name(0);
  EXPECT_EQ(default_file_system().read_small_file(join_path(holder->snapshot_path(41), shard), 1 << 20),
            default_file_system().read_small_file(join_path(source->snapshot_path(41), shard), 1 << 20));

  // The next run sends the same step again (it redid it): the copy is replaced.
  EXPECT_EQ(daemon::commit_packed_snapshot(packed, *holder), 41);
  EXPECT_EQ(holder->valid_steps(), std::vector<int64_t>{41});
}

TEST(MemoryReplicas, ADamagedOrCutMessageCommitsNothing) {
  TempDir dir;
  auto source = SnapshotStore::open_for_writing(dir.file("rank-00002"), /*fsync=*/false);
  auto holder = SnapshotStore::open_for_writing(dir.file("replicas"), /*fsync=*/false);
  commit_memory_snapshot(*source, 41);
  std::string packed = daemon::pack_snapshot(*source, 41);

  std::string flipped = packed;
  flipped[packed.size() / 3] = static_cast<char>(flipped[packed.size() / 3] ^ 0x01);  // inside the shard
  EXPECT_NE(testing::error_of<CorruptSnapshot>([&] {
              daemon::commit_packed_snapshot(flipped, *holder);
            }).find("the replica of step 41: rank-00000.pt does not match its manifest"),
            std::string::npos);
  EXPECT_NE(testing::error_of<Error>([&] {
              daemon::commit_packed_snapshot(packed.substr(0, packed.size() - 10), *holder);
            }).find("a replica message is cut short"),
            std::string::npos);
  EXPECT_TRUE(holder->committed_steps().empty());
  EXPECT_EQ(testing::list_names(holder->directory()), std::vector<std::string>{"LOCK"})
      << "no tmp dir is left behind";
}

}  // namespace
}  // namespace autosnap
