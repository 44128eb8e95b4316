// The `autosnap` command on snapshot directories: list, verify, latest,
// inspect, export, prune, and its exit codes and error lines.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;

testing::CommandResult autosnap_cli(const std::string& arguments) {
  return testing::run_command(testing::shell_quote(AUTOSNAP_CLI_PATH) + " " + arguments);
}

struct Net : torch::nn::Module {
  Net() { fc1 = register_module("fc1", torch::nn::Linear(3, 4)); }
  torch::nn::Linear fc1{nullptr};
};

// Snapshots at steps 0, 10, 20, 30 of a tiny training run.
void make_snapshots(const std::string& directory) {
  Net net;
  torch::optim::Adam optimizer(net.parameters(), torch::optim::AdamOptions(0.01));
  int64_t epoch = 0;
  double loss = 0;
  Snapshotter snap(
      Config::from_string("directory: " + directory +
                              "\ntriggers: {every_steps: 10, on_train_end: false}\n"
                              "retention: {keep_last: 0}\ncontrol: {socket: false}\nlog_level: warn\n",
                          "t.yaml"));
  snap.track("model_state_dict", net);
  snap.track("optimizer_state_dict", optimizer);
  snap.track("epoch", epoch);
  snap.track("loss", loss);
  for (int64_t step = 0; step <= 30; ++step) {
    optimizer.zero_grad();
    auto l = net.fc1->forward(torch::ones({2, 3})).pow(2).mean();
    l.backward();
    optimizer.step();
    loss = l.item<double>();
    epoch = step / 10;
    snap.on_step_end(step);
    if (step % 10 == 9) snap.on_epoch_end(epoch);  // epoch e spans steps 10e .. 10e + 9
  }
  snap.close();
}

std::string shard(const std::string& directory, int64_t step) {
  return directory + "/" + SnapshotStore::directory_name(step) + "/rank-00000.pt";
}

TEST(Cli, ListShowsEverySnapshotWithItsStatus) {
  TempDir dir;
  make_snapshots(dir.path());
  testing::truncate_file(shard(dir.path(), 20), 100);
  auto result = autosnap_cli("list " + testing::shell_quote(dir.path()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* fragment : {"STEP", "EPOCH", "TIME", "SIZE", "STATUS", "REASON", "every_steps", "valid",
                               "corrupt", "step 20 (corrupt): file 'rank-00000.pt' is 100 bytes"}) {
    EXPECT_NE(result.output.find(fragment), std::string::npos) << fragment << " in\n" << result.output;
  }
  auto json_result = autosnap_cli("list --json " + testing::shell_quote(dir.path()));
  auto entries = nlohmann::json::parse(json_result.output);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0]["step"], 0);
  EXPECT_EQ(entries[0]["status"], "valid");
  EXPECT_EQ(entries[2]["status"], "corrupt");
  // Step 30 is the first of epoch 3 (before issue 11 the column showed the last ended epoch, 2).
  EXPECT_EQ(entries[3]["epoch"], 3) << "the epoch step 30 belongs to";
  EXPECT_EQ(entries[3]["batch"], 1);
  EXPECT_EQ(entries[3]["epoch_ended"], false);
}

TEST(Cli, VerifyCatchesTruncationAndBitFlips) {
  TempDir dir;
  make_snapshots(dir.path());
  auto ok = autosnap_cli("verify " + testing::shell_quote(dir.path()));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("step 30: OK"), std::string::npos) << ok.output;

  const auto flipped = shard(dir.path(), 30);
  testing::flip_byte(flipped, testing::file_size(flipped) / 2);
  auto bad = autosnap_cli("verify " + testing::shell_quote(dir.path()));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("step 30: BAD: checksum mismatch"), std::string::npos) << bad.output;

  testing::truncate_file(shard(dir.path(), 10), 50);
  auto truncated = autosnap_cli("verify " + testing::shell_quote(dir.path()) + " 10");
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.output.find("step 10: BAD: file 'rank-00000.pt' is 50 bytes"), std::string::npos)
      << truncated.output;

  auto all = autosnap_cli("verify --all " + testing::shell_quote(dir.path()));
  EXPECT_EQ(all.exit_code, 1);
  EXPECT_NE(all.output.find("step 0: OK"), std::string::npos) << all.output;
  EXPECT_NE(all.output.find("step 20: OK"), std::string::npos) << all.output;
  // verify never changes anything (no quarantine).
  EXPECT_TRUE(default_file_system().status(dir.path() + "/step-000000000030").exists);

  // latest checks checksums: the flipped step 30 and truncated 10 are skipped.
  auto latest = autosnap_cli("latest " + testing::shell_quote(dir.path()));
  EXPECT_EQ(latest.exit_code, 0);
  EXPECT_EQ(latest.output, "20\n");
  auto fast = autosnap_cli("latest --fast " + testing::shell_quote(dir.path()));
  EXPECT_EQ(fast.output, "30\n") << "--fast checks sizes only";
}

TEST(Cli, VerifyTellsAReadErrorFromABadSnapshotThroughLibfiu) {
  AUTOSNAP_REQUIRE_FIU_RUN();
  TempDir dir;
  make_snapshots(dir.path());
  // Every pread fails (manifests and shards alike): the disk failed, not the data.
  auto result = testing::run_command("fiu-run -x -c 'enable name=posix/io/rw/pread,failinfo=5' " +
                                     testing::shell_quote(AUTOSNAP_CLI_PATH) + " verify " +
                                     testing::shell_quote(dir.path()));
  EXPECT_EQ(result.exit_code, 6) << "an I/O error says nothing about the data:\n" << result.output;
  EXPECT_NE(result.output.find("step 30: UNREADABLE:"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("Input/output error"), std::string::npos) << result.output;
  EXPECT_EQ(autosnap_cli("verify " + testing::shell_quote(dir.path())).exit_code, 0)
      << "the snapshot itself is fine";
}

TEST(Cli, LatestAndVerifyOnAnEmptyDirectory) {
  TempDir dir;
  auto latest = autosnap_cli("latest " + testing::shell_quote(dir.path()));
  EXPECT_EQ(latest.exit_code, 1);
  EXPECT_NE(latest.output.find("no valid snapshot in"), std::string::npos) << latest.output;
  auto missing = autosnap_cli("list " + testing::shell_quote(dir.file("absent")));
  EXPECT_EQ(missing.exit_code, 6);
  EXPECT_NE(missing.output.find("absent"), std::string::npos);
  EXPECT_NE(missing.output.find("No such file or directory"), std::string::npos) << missing.output;
}

TEST(Cli, AnUnknownCommandIsNamedWithTheRealOnes) {
  TempDir dir;
  auto result = autosnap_cli("frobnicate " + testing::shell_quote(dir.path()));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(
      result.output.find("unknown command 'frobnicate'; the commands are list, verify, inspect, snapshot, "
                         "status, latest, prune, export, clean"),
      std::string::npos)
      << result.output;
  auto none = autosnap_cli("");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("subcommand is required"), std::string::npos) << none.output;
}

TEST(Cli, InspectShowsEntriesShapesAndTheOptimizer) {
  TempDir dir;
  make_snapshots(dir.path());
  auto result = autosnap_cli("inspect " + testing::shell_quote(dir.path()) + " 20");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* fragment : {"step 20, epoch 2 (batch 1)", "reason \"every_steps\"", "world size 1",
                               "rank-00000.pt", "model_state_dict  (module", "fc1.weight  Float[4, 3]",
                               "fc1.bias    Float[4]", "optimizer_state_dict  (optimizer Adam)", "lr=0.01",
                               "betas=(0.9, 0.999)", "epoch  (int)", "rng_state"}) {
    EXPECT_NE(result.output.find(fragment), std::string::npos) << fragment << " in\n" << result.output;
  }
}

TEST(Cli, ExportWritesOnePythonLoadableFile) {
  TempDir dir;
  make_snapshots(dir.path());
  auto result = autosnap_cli("export " + testing::shell_quote(dir.path()) + " --out " +
                             testing::shell_quote(dir.file("final.pt")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("exported step 30"), std::string::npos) << result.output;
  auto value = load(dir.file("final.pt"));
  EXPECT_EQ(dict_at(value, "epoch").toInt(), 3);
  if (auto reason = testing::python_torch_unavailable_reason()) {
    std::cout << *reason << std::endl;
    return;
  }
  auto python = testing::run_python_code(
      "import sys, torch\n"
      "c = torch.load(sys.argv[1])\n"
      "assert {'model_state_dict', 'optimizer_state_dict', 'epoch', 'loss'} <= set(c), c.keys()\n"
      "m = torch.nn.Module(); m.fc1 = torch.nn.Linear(3, 4)\n"
      "m.load_state_dict(c['model_state_dict'])\n"
      "o = torch.optim.Adam(m.parameters(), lr=0.5); o.load_state_dict(c['optimizer_state_dict'])\n"
      "print('python ok', c['epoch'], o.param_groups[0]['lr'])\n",
      dir.file("final.pt"));
  EXPECT_EQ(python.exit_code, 0) << python.output;
  EXPECT_NE(python.output.find("python ok 3 0.01"), std::string::npos) << python.output;
}

TEST(Cli, PruneDryRunDeletesNothingAndPruneKeepsTheNewest) {
  TempDir dir;
  make_snapshots(dir.path());
  auto dry = autosnap_cli("prune " + testing::shell_quote(dir.path()) +
                          " --keep-last 1 --keep-every-steps 20 --dry-run");
  EXPECT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("would delete step 10"), std::string::npos) << dry.output;
  EXPECT_EQ(dry.output.find("step 20"), std::string::npos) << "20 is a multiple of 20: kept";
  EXPECT_EQ(SnapshotStore::open_read_only(dir.path())->valid_steps(), (std::vector<int64_t>{0, 10, 20, 30}));

  auto real =
      autosnap_cli("prune " + testing::shell_quote(dir.path()) + " --keep-last 1 --keep-every-steps 20");
  EXPECT_EQ(real.exit_code, 0) << real.output;
  EXPECT_NE(real.output.find("deleted step 10"), std::string::npos) << real.output;
  EXPECT_EQ(SnapshotStore::open_read_only(dir.path())->valid_steps(), (std::vector<int64_t>{0, 20, 30}));

  auto writer = SnapshotStore::open_for_writing(dir.path());
  auto locked = autosnap_cli("prune " + testing::shell_quote(dir.path()) + " --keep-last 1");
  EXPECT_EQ(locked.exit_code, 6);
  EXPECT_NE(locked.output.find("locked by another writer"), std::string::npos) << locked.output;
}

TEST(Cli, CommandsForARunningJobSayWhenThereIsNone) {
  TempDir dir;
  auto snapshot = autosnap_cli("snapshot " + testing::shell_quote(dir.path()) + " --timeout 2");
  EXPECT_EQ(snapshot.exit_code, 3);
  EXPECT_NE(snapshot.output.find("no running job"), std::string::npos) << snapshot.output;
  auto status = autosnap_cli("status " + testing::shell_quote(dir.path()));
  EXPECT_EQ(status.exit_code, 3);
  EXPECT_NE(status.output.find("job: not running"), std::string::npos) << status.output;
  auto usage = autosnap_cli("frobnicate");
  EXPECT_EQ(usage.exit_code, 2);
  auto help = autosnap_cli("verify --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("XXH3-64"), std::string::npos) << help.output;
}

}  // namespace
}  // namespace autosnap
