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

// A Net whose parameters all differ from testing::Net's.
testing::Net filled_net() {
  testing::Net net;
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.fill_(-1);
  return net;
}

TEST(StateDict, AValueGivenUpBecomesTheModulesStorageWithoutACopy) {
  testing::TempDir dir;
  testing::Net net;
  save(state_dict(*net), dir.file("model.pt"));
  testing::Net other = filled_net();
  const at::Tensor held = other->fc1->weight;  // as an optimizer holds it
  const void* before = other->fc1->weight.data_ptr();

  EXPECT_TRUE(load_state_dict(*other, load(dir.file("model.pt"))).ok());
  EXPECT_NE(other->fc1->weight.data_ptr(), before) << "the loaded storage should have been installed";
  EXPECT_EQ(held.data_ptr(), other->fc1->weight.data_ptr()) << "the same tensor, now on the loaded storage";
  EXPECT_TRUE(other->fc1->weight.requires_grad());
  EXPECT_TRUE(other->fc1->weight.is_leaf());
  EXPECT_EQ(testing::describe_difference(state_dict(*other), state_dict(*net)), "");
}

TEST(StateDict, AValueStillHeldIsCopiedSoItDoesNotAliasTheModule) {
  testing::TempDir dir;
  testing::Net net;
  save(state_dict(*net), dir.file("model.pt"));
  testing::Net other = filled_net();
  const void* before = other->fc1->weight.data_ptr();
  const c10::IValue loaded = load(dir.file("model.pt"));

  EXPECT_TRUE(load_state_dict(*other, loaded).ok());
  EXPECT_EQ(other->fc1->weight.data_ptr(), before);
  // Given up, but still held elsewhere: copied too.
  c10::IValue also_held = loaded;
  testing::Net third = filled_net();
  const void* third_before = third->fc1->weight.data_ptr();
  EXPECT_TRUE(load_state_dict(*third, std::move(also_held)).ok());
  EXPECT_EQ(third->fc1->weight.data_ptr(), third_before);
  {
    torch::NoGradGuard no_grad;
    other->fc1->weight.add_(1);
    third->fc1->weight.add_(1);
  }
  EXPECT_TRUE(torch::equal(loaded.toGenericDict().at("fc1.weight").toTensor(), net->fc1->weight));
}

TEST(StateDict, ATensorHeldOutOfAGivenUpValueIsCopied) {
  testing::TempDir dir;
  testing::Net net;
  save(state_dict(*net), dir.file("model.pt"));
  c10::IValue loaded = load(dir.file("model.pt"));
  const at::Tensor kept = loaded.toGenericDict().at("fc2.weight").toTensor();
  testing::Net other = filled_net();
  const void* fc2_before = other->fc2->weight.data_ptr();
  const void* fc1_before = other->fc1->weight.data_ptr();

  EXPECT_TRUE(load_state_dict(*other, std::move(loaded)).ok());
  EXPECT_EQ(other->fc2->weight.data_ptr(), fc2_before) << "fc2.weight is still held: it must be copied";
  EXPECT_NE(other->fc1->weight.data_ptr(), fc1_before);
  EXPECT_TRUE(torch::equal(other->fc2->weight, kept));
}

TEST(StateDict, ParametersSharingTheirStorageAreCopiedIntoSoTheirAliasesStayInStep) {
  testing::TempDir dir;
  testing::Net net;
  save(state_dict(*net), dir.file("model.pt"));
  testing::Net other = filled_net();
  const at::Tensor alias = other->fc1->weight.detach();  // e.g. a user's view or a tied weight
  {
    // fc2.weight becomes a view into a bigger buffer (a flat parameter buffer).
    torch::NoGradGuard no_grad;
    at::Tensor flat = torch::full({100}, -1.0);
    other->fc2->weight.set_(flat.storage(), 10, other->fc2->weight.sizes(), other->fc2->weight.strides());
  }

  EXPECT_TRUE(load_state_dict(*other, load(dir.file("model.pt"))).ok());
  EXPECT_EQ(alias.data_ptr(), other->fc1->weight.data_ptr());
  EXPECT_TRUE(torch::equal(alias, net->fc1->weight));
  // Nothing else holds the flat buffer here: its offset alone keeps it.
  EXPECT_EQ(other->fc2->weight.storage_offset(), 10);
  EXPECT_EQ(other->fc2->weight.storage().nbytes(), 100 * sizeof(float));
  for (const auto& item : state_dict(*net)) {
    EXPECT_TRUE(torch::equal(state_dict(*other).at(item.key()), item.value())) << item.key();
  }
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
