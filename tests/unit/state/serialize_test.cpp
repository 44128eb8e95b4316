// save/load: every value kind round-trips, sharing survives, saves are
// atomic, and bad files or unsupported values fail with clear errors.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "fs/atomic_file.h"
#include "support/interop_cases.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::error_of;
using testing::TempDir;
using namespace std::string_literals;

// Writes a zip in torch.save layout whose data.pkl is `pickle` (hand-made).
void write_raw_archive(const std::string& path, const std::string& pickle) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
}

TEST(Serialize, EveryValueKindRoundTrips) {
  TempDir dir;
  for (const auto& [name, value] : testing::interop_cases()) {
    const auto path = dir.file(name + ".pt");
    save(value, path);
    EXPECT_EQ(testing::describe_difference(load(path), value, name), "");
  }
}

TEST(Serialize, SingleTensorLikeTheSeed) {
  TempDir dir;
  auto x = torch::randint(100, {4, 4});
  save(x, dir.file("x.pt"));
  auto y = load(dir.file("x.pt")).toTensor();
  EXPECT_TRUE(torch::equal(x, y));
  EXPECT_EQ(y.scalar_type(), x.scalar_type());
}

TEST(Serialize, ViewSharingSurvivesAndCloneBreaksIt) {
  TempDir dir;
  auto x = torch::arange(10);
  save(list({x, x.slice(0, 0, 5)}), dir.file("shared.pt"));
  save(list({x, x.slice(0, 0, 5).clone()}), dir.file("cloned.pt"));

  auto shared = load(dir.file("shared.pt")).toList();
  auto a = shared.get(0).toTensor(), b = shared.get(1).toTensor();
  a[0] = 100;
  EXPECT_EQ(b[0].item<int64_t>(), 100) << "the view must still share the base tensor's storage";

  auto cloned = load(dir.file("cloned.pt")).toList();
  a = cloned.get(0).toTensor();
  b = cloned.get(1).toTensor();
  a[0] = 100;
  EXPECT_EQ(b[0].item<int64_t>(), 0) << "a saved clone must not share storage";
}

TEST(Serialize, SharedStorageIsWrittenOnce) {
  TempDir dir;
  auto big = torch::zeros({1 << 18});  // 1 MiB
  save(list({big}), dir.file("one.pt"));
  save(list({big, big.slice(0, 0, 5), big.slice(0, 100, 200)}), dir.file("three.pt"));
  EXPECT_LT(testing::file_size(dir.file("three.pt")), testing::file_size(dir.file("one.pt")) + 4096);
}

TEST(Serialize, CheckpointDictLikeTheSeed) {
  TempDir dir;
  testing::Net net;
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto loss = net->forward(torch::ones({4, 3})).pow(2).mean();
  loss.backward();
  optimizer.step();
  save(dict({{"epoch", 3},
             {"loss", loss.item<double>()},
             {"model_state_dict", state_dict(*net)},
             {"optimizer_state_dict", optimizer_state_dict(optimizer)}}),
       dir.file("checkpoint.pt"));

  testing::Net restored;
  torch::optim::SGD restored_optimizer(restored->parameters(), torch::optim::SGDOptions(0.5));
  auto checkpoint = load(dir.file("checkpoint.pt"), "cpu");
  load_state_dict(*restored, dict_at(checkpoint, "model_state_dict"));
  load_optimizer_state_dict(restored_optimizer, dict_at(checkpoint, "optimizer_state_dict"));
  EXPECT_EQ(dict_at(checkpoint, "epoch").toInt(), 3);
  EXPECT_DOUBLE_EQ(dict_at(checkpoint, "loss").toDouble(), loss.item<double>());
  EXPECT_EQ(testing::describe_difference(state_dict(*restored), state_dict(*net)), "");
  EXPECT_DOUBLE_EQ(restored_optimizer.param_groups()[0].options().get_lr(), 0.1);
  restored->eval();  // as the seed says: eval() for inference, train() to continue
  EXPECT_FALSE(restored->is_training());
  EXPECT_NE(error_of<Error>([&] { dict_at(checkpoint, "acc"); }).find("key 'acc' is missing"),
            std::string::npos);
}

// PyTorch >= 2.6 loads with weights_only=True by default, which refuses
// torch.jit._pickle.build_intlist & co.: typed lists must be written as plain lists.
TEST(Serialize, TypedListsAreWrittenAsPlainPythonLists) {
  TempDir dir;
  c10::List<int64_t> ints({1, 2, 3});
  c10::List<at::Tensor> tensors({torch::ones({1}), torch::zeros({2})});
  c10::List<double> doubles({0.5});
  save(dict({{"ints", ints}, {"tensors", tensors}, {"nested", tuple({doubles, list({ints})})}}),
       dir.file("x.pt"));
  const std::string bytes = default_file_system().read_small_file(dir.file("x.pt"), 1 << 20);
  EXPECT_EQ(bytes.find("torch.jit._pickle"), std::string::npos) << "a LibTorch-only global was written";
  auto loaded = load(dir.file("x.pt"));
  EXPECT_EQ(dict_at(loaded, "ints").toIntVector(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(dict_at(loaded, "tensors").toListRef().size(), 2u);
}

TEST(Serialize, MapLocation) {
  TempDir dir;
  save(torch::ones({2}), dir.file("x.pt"));
  EXPECT_TRUE(load(dir.file("x.pt"), "cpu").toTensor().device().is_cpu());
  EXPECT_TRUE(load(dir.file("x.pt"), torch::Device(torch::kCPU)).toTensor().device().is_cpu());
  auto bad = error_of<Error>([&] { load(dir.file("x.pt"), "gpu"); });
  EXPECT_NE(bad.find("map_location 'gpu'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("expected cpu, cuda or cuda:N"), std::string::npos) << bad;
  if (!torch::cuda::is_available()) {
    for (const char* device : {"cuda", "cuda:0", "cuda:3"}) {
      auto message = error_of<Error>([&] { load(dir.file("x.pt"), device); });
      EXPECT_NE(message.find("CUDA is not available"), std::string::npos) << message;
      EXPECT_NE(message.find(device), std::string::npos) << message;
    }
  } else {
    auto t = load(dir.file("x.pt"), "cuda").toTensor();
    EXPECT_TRUE(t.device().is_cuda());
    EXPECT_TRUE(torch::equal(t.cpu(), torch::ones({2})));
    auto message = error_of<Error>(
        [&] { load(dir.file("x.pt"), "cuda:" + std::to_string(torch::cuda::device_count())); });
    EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
  }
}

TEST(Serialize, UnsupportedValuesAreRefusedAndTheOldFileKept) {
  TempDir dir;
  const auto path = dir.file("x.pt");
  save(torch::ones({3}), path);
  auto sparse = torch::eye(3).to_sparse();
  auto message = error_of<Error>([&] { save(dict({{"weights", list({1, sparse})}}), path); });
  EXPECT_NE(message.find("value['weights'][1]"), std::string::npos) << message;
  EXPECT_NE(message.find("dense"), std::string::npos) << message;
  EXPECT_TRUE(torch::equal(load(path).toTensor(), torch::ones({3})));
  EXPECT_EQ(testing::list_names(dir.path()), std::vector<std::string>{"x.pt"}) << "no temp file may be left";
}

TEST(Serialize, SaveLeavesOnlyTheTargetAndRemovesStaleTempFiles) {
  TempDir dir;
  const auto path = dir.file("x.pt");
  save(torch::ones({3}), path);
  save(torch::zeros({3}), path);
  EXPECT_EQ(testing::list_names(dir.path()), std::vector<std::string>{"x.pt"});

  // A crashed writer's temp file (nobody holds its lock) goes at the next save;
  // a live writer's (locked) temp file stays.
  testing::write_text(dir.file(".x.pt.autosnap-tmp-0123456789abcdef"), "partial");
  testing::write_text(dir.file(".y.pt.autosnap-tmp-00000000000000ff"), "live");
  auto live_lock = default_file_system().try_lock(dir.file(".y.pt.autosnap-tmp-00000000000000ff"), false);
  ASSERT_NE(live_lock, nullptr);
  save(torch::ones({1}), dir.file("other.pt"));
  auto names = testing::list_names(dir.path());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".y.pt.autosnap-tmp-00000000000000ff", "other.pt", "x.pt"}));
}

TEST(Serialize, DamagedFilesAreRejectedClearly) {
  TempDir dir;
  const auto path = dir.file("x.pt");
  save(dict({{"w", torch::arange(1000, torch::kFloat32)}}), path);
  const auto size = testing::file_size(path);

  testing::write_text(dir.file("text.pt"), "this is not a checkpoint");
  auto message = error_of<CorruptSnapshot>([&] { load(dir.file("text.pt")); });
  EXPECT_NE(message.find("not a valid torch.save file"), std::string::npos) << message;
  EXPECT_NE(message.find("text.pt"), std::string::npos) << message;

  testing::run_command("cp " + testing::shell_quote(path) + " " +
                       testing::shell_quote(dir.file("flipped.pt")));
  testing::flip_byte(dir.file("flipped.pt"), size / 2);  // inside the tensor data
  message = error_of<CorruptSnapshot>([&] { load(dir.file("flipped.pt")); });
  EXPECT_NE(message.find("CRC-32 mismatch"), std::string::npos) << message;

  for (uint64_t cut : {size - 1, size - 30, size / 2, uint64_t{100}, uint64_t{0}}) {
    testing::run_command("cp " + testing::shell_quote(path) + " " + testing::shell_quote(dir.file("cut.pt")));
    testing::truncate_file(dir.file("cut.pt"), cut);
    EXPECT_THROW(load(dir.file("cut.pt")), CorruptSnapshot) << "truncated to " << cut;
  }
  message = error_of<IoError>([&] { load(dir.file("missing.pt")); });
  EXPECT_NE(message.find("missing.pt"), std::string::npos) << message;
  EXPECT_NE(message.find("No such file"), std::string::npos) << message;
}

TEST(Serialize, HostilePicklesExecuteNothing) {
  TempDir dir;
  const std::string proto = "\x80\x02";
  struct Case {
    std::string pickle;
    std::string expected;
  } cases[] = {
      {proto + "cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."s, "refusing to load 'os.system'"},
      {proto + "c__builtin__\neval\n.", "refusing to load '__builtin__.eval'"},
      {proto + "]q\x00h\x00"
               "a."s,
       "contains itself"},
      {proto + "]q\x00]q\x01h\x00"
               "a0h\x01"
               "a."s,
       "modified after it was nested"},
      {proto + "h\x05.", "memo entry 5 was never stored"},
      {proto + "X\xff\xff\xff\x7f"
               "abc.",
       "truncated"},
      {proto + "a.", "empty stack"},
      {proto + "\xff.", "unsupported pickle opcode 0xff"},
  };
  for (const auto& c : cases) {
    write_raw_archive(dir.file("evil.pt"), c.pickle);
    auto message = error_of<CorruptSnapshot>([&] { load(dir.file("evil.pt")); });
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
  }
  // Deep nesting is capped instead of overflowing the stack.
  std::string deep = proto;
  for (int i = 0; i < 5000; ++i) deep += "]";
  for (int i = 0; i < 4999; ++i) deep += "a";
  deep += ".";
  write_raw_archive(dir.file("deep.pt"), deep);
  auto message = error_of<CorruptSnapshot>([&] { load(dir.file("deep.pt")); });
  EXPECT_NE(message.find("nested deeper than"), std::string::npos) << message;
}

}  // namespace
}  // namespace autosnap
