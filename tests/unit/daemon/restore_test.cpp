// Restoring through the Snapshotter: everything tracked comes back, corrupt
// snapshots are skipped, resume modes, strict matching.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "autosnap/autosnap.h"
#include "autosnap/snapshotter.h"
#include "autosnap/tools.h"
#include "support/snapshotter_fixtures.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::count_events;
using testing::error_of;
using testing::make_config;
using testing::Model;
using testing::TempDir;

TEST(Snapshotter, RestoreBringsBackEverythingTracked) {
  TempDir dir;
  Model model;
  torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(0.1));
  int64_t epoch = 3;
  double loss = 0.25;
  bool flag = true;
  std::string note = "hello";
  at::Tensor extra = torch::arange(5);
  at::Tensor lazily_defined;
  std::vector<int64_t> user_state = {1, 2, 3};
  auto track_all = [&](Snapshotter& snap) {
    snap.track("model", model);
    snap.track("optimizer", optimizer);
    snap.track("epoch", epoch);
    snap.track("loss", loss);
    snap.track("flag", flag);
    snap.track("note", note);
    snap.track("extra", extra);
    snap.track("lazy", lazily_defined);
    snap.track(
        "user", [&] { return c10::IValue(user_state); },
        [&](const c10::IValue& v) { user_state = v.toIntVector(); });
  };
  model.set_all(1.5);
  model.weight.mutable_grad() = torch::ones_like(model.weight);
  model.bias.mutable_grad() = torch::ones_like(model.bias);
  optimizer.step();
  const auto trained_weight = model.weight.detach().clone();
  lazily_defined = torch::ones({2});
  torch::manual_seed(7);
  at::Tensor expected_random;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {on_train_end: true}\n"));
    track_all(snap);
    snap.on_step_end(41);
    snap.on_epoch_end(3);
    snap.on_train_end();
    expected_random = torch::randn({4});  // what a resumed run must draw next
  }
  model.set_all(0);
  optimizer.param_groups()[0].options().set_lr(9);
  epoch = 0;
  loss = 0;
  flag = false;
  note = "";
  extra.zero_();
  lazily_defined = at::Tensor();
  user_state.clear();
  torch::manual_seed(123);

  Snapshotter snap(make_config(dir.path()));
  track_all(snap);
  auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 41);
  EXPECT_EQ(resumed->epoch, 3);
  EXPECT_EQ(resumed->reason, "train_end");
  EXPECT_TRUE(torch::equal(model.weight, trained_weight));
  EXPECT_TRUE(torch::all(model.running == 1.5).item<bool>());
  EXPECT_DOUBLE_EQ(optimizer.param_groups()[0].options().get_lr(), 0.1);
  EXPECT_EQ(epoch, 3);
  EXPECT_DOUBLE_EQ(loss, 0.25);
  EXPECT_TRUE(flag);
  EXPECT_EQ(note, "hello");
  EXPECT_TRUE(torch::equal(extra, torch::arange(5)));
  ASSERT_TRUE(lazily_defined.defined());
  EXPECT_TRUE(torch::equal(lazily_defined, torch::ones({2})));
  EXPECT_EQ(user_state, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(torch::equal(torch::randn({4}), expected_random))
      << "the random generator state must be restored";
  EXPECT_EQ(count_events(dir.path(), "restored"), 1);
}

// As torch::load does, a restore installs the storages it read instead of
// copying them, unless another tensor shares the live one's storage: then it
// copies, so that tensor sees the restored values too.
TEST(Snapshotter, RestoreInstallsTheReadStoragesWhereNothingElseSharesTheLiveOnes) {
  TempDir dir;
  Model model;
  torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(0.5));
  model.set_all(2);
  Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\n"));
  snap.track("model", model);
  snap.track("optimizer", optimizer);
  snap.on_step_end(0);  // the capture now holds aliases of the live storages
  snap.wait_until_finished();
  model.set_all(7);
  const at::Tensor bias_alias = model.bias.detach();  // the user's own alias
  const void* weight_before = model.weight.data_ptr();
  const void* bias_before = model.bias.data_ptr();

  ASSERT_TRUE(snap.restore_latest());
  EXPECT_NE(model.weight.data_ptr(), weight_before) << "the weight's read storage should have been installed";
  EXPECT_EQ(model.bias.data_ptr(), bias_before) << "the bias is shared with an alias: copied into";
  EXPECT_TRUE(torch::all(model.weight == 2).item<bool>());
  EXPECT_TRUE(torch::all(bias_alias == 2).item<bool>());
  EXPECT_TRUE(model.weight.requires_grad());

  // The optimizer steps the installed storage, and the next snapshot holds what it did.
  model.weight.mutable_grad() = torch::ones_like(model.weight);
  model.bias.mutable_grad() = torch::ones_like(model.bias);
  optimizer.step();
  EXPECT_TRUE(torch::all(model.weight == 1.5).item<bool>());
  snap.on_step_end(1);
  snap.wait_until_finished();
  const auto saved = testing::read_entry(dir.path(), 1, "model").toGenericDict();
  EXPECT_TRUE(torch::all(saved.at("weight").toTensor() == 1.5).item<bool>());
}

TEST(Snapshotter, RestoreFallsBackPastACorruptSnapshot) {
  TempDir dir;
  int64_t value = 0;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1, on_train_end: false}\n"));
    snap.track("value", value);
    for (int64_t step = 0; step < 3; ++step) {
      value = step * 10;
      snap.on_step_end(step);
    }
  }
  const std::string shard = dir.path() + "/step-000000000002/rank-00000.pt";
  testing::flip_byte(shard, testing::file_size(shard) / 2);
  Snapshotter snap(make_config(dir.path()));
  snap.track("value", value);
  auto resumed = snap.on_train_start();
  ASSERT_TRUE(resumed);
  EXPECT_EQ(resumed->step, 1);
  EXPECT_EQ(value, 10);
  EXPECT_TRUE(default_file_system().status(dir.path() + "/step-000000000002.corrupt-1").exists);
  EXPECT_EQ(count_events(dir.path(), "quarantined"), 1);
}

TEST(Snapshotter, ResumeModes) {
  TempDir dir;
  int64_t value = 0;
  {
    Snapshotter snap(make_config(dir.path(), "resume: required\n"));
    snap.track("value", value);
    try {
      snap.on_train_start();
      ADD_FAILURE() << "resume: required without a snapshot must fail";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("resume: required, but"), std::string::npos) << e.what();
    }
  }
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1}\n"));
    snap.track("value", value);
    value = 5;
    snap.on_step_end(0);
  }
  value = 0;
  {
    // A new run would collide with the earlier run's steps: refused, nothing touched.
    Snapshotter snap(make_config(dir.path(), "resume: never\n"));
    snap.track("value", value);
    const auto message = error_of<Error>([&] { snap.on_train_start(); });
    EXPECT_NE(message.find("resume: never, but '" + dir.path() +
                           "' already holds snapshots of an earlier run (newest: step 0)"),
              std::string::npos)
        << message;
    EXPECT_EQ(value, 0);
  }
  EXPECT_EQ(SnapshotStore::open_read_only(dir.path())->valid_steps(), (std::vector<int64_t>{0}));
  TempDir fresh;
  Snapshotter snap(make_config(fresh.path(), "resume: never\n"));
  snap.track("value", value);
  EXPECT_FALSE(snap.on_train_start().has_value());
}

// An entry that does not fit names the snapshot it came from, not only itself.
TEST(Snapshotter, AMismatchNamesTheEntryAndTheSnapshotStep) {
  TempDir dir;
  {
    at::Tensor weights = torch::ones({2, 3});
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 7}\n"));
    snap.track("weights", weights);
    for (int64_t step = 0; step <= 7; ++step) snap.on_step_end(step);
    snap.close();
  }
  at::Tensor other = torch::zeros({4});
  Snapshotter snap(make_config(dir.path()));
  snap.track("weights", other);
  try {
    snap.on_train_start();
    ADD_FAILURE() << "a tensor of another shape must not be restored";
  } catch (const StateMismatch& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("snapshot of step 7 ("), std::string::npos) << message;
    EXPECT_NE(message.find("'weights'"), std::string::npos) << message;
  }
  EXPECT_TRUE(other.eq(0).all().item<bool>()) << "nothing is restored from a snapshot that does not fit";
}

TEST(Snapshotter, StrictRestoreNamesWhatDoesNotMatchAndChangesNothing) {
  TempDir dir;
  int64_t a = 1, b = 2;
  {
    Snapshotter snap(make_config(dir.path(), "triggers: {every_steps: 1}\n"));
    snap.track("a", a);
    snap.track("b", b);
    snap.on_step_end(0);
  }
  a = 0;
  int64_t c = 0;
  {
    Snapshotter snap(make_config(dir.path()));
    snap.track("a", a);
    snap.track("c", c);
    try {
      snap.on_train_start();
      ADD_FAILURE() << "a mismatch must fail with restore.strict";
    } catch (const StateMismatch& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("tracked but not in the snapshot: c"), std::string::npos) << message;
      EXPECT_NE(message.find("in the snapshot but not tracked: b"), std::string::npos) << message;
    }
    EXPECT_EQ(a, 0) << "nothing may be restored when the snapshot does not fit";
  }
  {
    Snapshotter snap(make_config(dir.path(), "restore: {strict: false}\n"));
    snap.track("a", a);
    snap.track("c", c);
    ASSERT_TRUE(snap.on_train_start().has_value());
    EXPECT_EQ(a, 1);
    EXPECT_EQ(c, 0);
  }

  double wrong_type = 0;
  Snapshotter typed(make_config(dir.path(), "restore: {strict: false}\n"));
  typed.track("a", wrong_type);
  EXPECT_NO_THROW(typed.on_train_start()) << "an int restores into a double";
  EXPECT_EQ(wrong_type, 1.0);
}

}  // namespace
}  // namespace autosnap
