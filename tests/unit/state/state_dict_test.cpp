// state_dict / load_state_dict: PyTorch's names, order and error messages.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "autosnap/autosnap.h"
#include "support/interop_cases.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

std::vector<std::string> keys_of(const StateDict& d) {
  std::vector<std::string> keys;
  for (const auto& item : d) keys.push_back(item.key());
  return keys;
}

std::string strict_error(torch::nn::Module& module, const c10::IValue& state) {
  try {
    load_state_dict(module, state);
  } catch (const StateMismatch& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(StateDict, NamesAndOrderFollowPyTorch) {
  testing::Net net;
  EXPECT_EQ(keys_of(state_dict(*net)),
            (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                      "bn.running_var", "bn.num_batches_tracked", "fc2.weight", "fc2.bias"}));
}

TEST(StateDict, TensorsAreDetachedViewsOfTheLiveOnes) {
  testing::Net net;
  auto d = state_dict(*net);
  EXPECT_FALSE(d.at("fc1.weight").requires_grad());
  EXPECT_EQ(d.at("fc1.weight").data_ptr(), net->fc1->weight.data_ptr()) << "state_dict must not copy";
}

TEST(StateDict, RoundTripThroughAFile) {
  testing::TempDir dir;
  testing::Net net;
  save(state_dict(*net), dir.file("model.pt"));
  testing::Net other;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : other->parameters()) p.fill_(-1);
  }
  auto result = load_state_dict(*other, load(dir.file("model.pt")));
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(testing::describe_difference(state_dict(*other), state_dict(*net)), "");
}

TEST(StateDict, StrictListsEveryProblemAndCopiesNothing) {
  testing::Net net;
  auto saved = dict();
  for (const auto& item : state_dict(*testing::Net())) saved.insert(item.key(), item.value() + 1);
  ASSERT_EQ(saved.erase("fc2.weight"), 1u);
  ASSERT_EQ(saved.erase("fc2.bias"), 1u);
  saved.insert("fc3.weight", torch::zeros({2, 2}));
  saved.insert_or_assign("fc1.weight", torch::zeros({5, 3}));
  saved.insert_or_assign("fc1.bias", torch::zeros({4}, torch::kFloat64));
  saved.insert_or_assign("bn.weight", 3);
  const auto before = state_dict(*net).at("bn.bias").clone();

  const auto message = strict_error(*net, saved);
  for (const char* fragment : {
           "Error(s) in loading state_dict for",
           "Missing key(s) in state_dict: \"fc2.weight\", \"fc2.bias\".",
           "Unexpected key(s) in state_dict: \"fc3.weight\".",
           "size mismatch for fc1.weight: copying a param with shape [5, 3] from checkpoint, the shape in "
           "current model is [4, 3].",
           "dtype mismatch for fc1.bias: copying a param with dtype Double from checkpoint, the dtype in "
           "current "
           "model is Float.",
           "type mismatch for bn.weight: the checkpoint holds a Int, expected a tensor.",
       }) {
    EXPECT_NE(message.find(fragment), std::string::npos) << "missing: " << fragment << "\nin: " << message;
  }
  EXPECT_TRUE(torch::equal(state_dict(*net).at("bn.bias"), before))
      << "strict failure must not copy anything";
}

TEST(StateDict, NonStrictLoadsWhatFitsAndReports) {
  testing::Net net;
  auto saved = dict();
  for (const auto& item : state_dict(*net)) saved.insert(item.key(), item.value() + 1);
  ASSERT_EQ(saved.erase("fc2.bias"), 1u);
  saved.insert("extra", torch::zeros({1}));
  saved.insert_or_assign("fc1.weight", torch::zeros({1}));
  const auto expected_bn_bias = state_dict(*net).at("bn.bias") + 1;
  const auto fc1_before = state_dict(*net).at("fc1.weight").clone();

  auto result = load_state_dict(*net, saved, /*strict=*/false);
  EXPECT_EQ(result.missing_keys, std::vector<std::string>{"fc2.bias"});
  EXPECT_EQ(result.unexpected_keys, std::vector<std::string>{"extra"});
  ASSERT_EQ(result.mismatched.size(), 1u);
  EXPECT_NE(result.mismatched[0].find("size mismatch for fc1.weight"), std::string::npos);
  EXPECT_TRUE(torch::equal(state_dict(*net).at("bn.bias"), expected_bn_bias));
  EXPECT_TRUE(torch::equal(state_dict(*net).at("fc1.weight"), fc1_before));
}

TEST(StateDict, ModuleHoldersAreAcceptedAsTheyAreByTrack) {
  torch::nn::Linear saved(3, 2), loaded(3, 2);  // holders, as TORCH_MODULE declares them
  const StateDict state = state_dict(saved);
  EXPECT_EQ(state.size(), 2u);
  EXPECT_TRUE(load_state_dict(loaded, state).ok());
  EXPECT_TRUE(torch::equal(loaded->weight, saved->weight));
}

TEST(StateDict, NotADict) {
  testing::Net net;
  const auto message = strict_error(*net, torch::ones({2}));
  EXPECT_NE(message.find("should be a dict of name -> tensor, got a Tensor"), std::string::npos) << message;
}

}  // namespace
}  // namespace autosnap
