// The captures snapshots take of a tracked module and optimizer: kept from one
// snapshot to the next, and always what a fresh state_dict() /
// optimizer_state_dict() would be, whatever the training loop changed.
#include "state/cached_capture.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

#include "autosnap/autosnap.h"
#include "support/interop_cases.h"
#include "support/test_util.h"
#include "util/compact_dict.h"

namespace autosnap {
namespace state {
namespace {

// Both tensors show the same memory the same way, or (a step count made anew
// at each capture) the same 0-dim value.
void expect_same_tensor(const at::Tensor& a, const at::Tensor& b, const std::string& where) {
  ASSERT_EQ(a.defined(), b.defined()) << where;
  if (!a.defined()) return;
  EXPECT_EQ(a.dtype(), b.dtype()) << where;
  EXPECT_EQ(a.sizes(), b.sizes()) << where;
  if (a.storage().is_alias_of(b.storage())) {
    EXPECT_EQ(a.storage_offset(), b.storage_offset()) << where;
    EXPECT_EQ(a.strides(), b.strides()) << where;
  } else {
    EXPECT_EQ(a.dim(), 0) << where << ": a tensor on other memory than a fresh capture's";
    EXPECT_TRUE(torch::equal(a, b)) << where;
  }
}

std::string key_text(const c10::IValue& key) { return key.isString() ? key.toStringRef() : c10::str(key); }

// Equal structure, keys in the same order, equal plain values, tensors as above.
void expect_same_capture(const c10::IValue& a, const c10::IValue& b, const std::string& where = "") {
  if (a.isTensor()) {
    ASSERT_TRUE(b.isTensor()) << where;
    expect_same_tensor(a.toTensor(), b.toTensor(), where);
  } else if (a.isGenericDict()) {
    ASSERT_TRUE(b.isGenericDict()) << where;
    const auto x = a.toGenericDict();
    const auto y = b.toGenericDict();
    ASSERT_EQ(x.size(), y.size()) << where;
    auto it = y.begin();
    for (const auto& entry : x) {
      ASSERT_EQ(key_text(entry.key()), key_text(it->key())) << where;
      expect_same_capture(entry.value(), it->value(), where + "/" + key_text(entry.key()));
      ++it;
    }
  } else if (a.isList() || a.isTuple()) {
    ASSERT_EQ(a.isList(), b.isList()) << where;
    const auto x = a.isList() ? a.toListRef().vec() : a.toTupleRef().elements().vec();
    const auto y = b.isList() ? b.toListRef().vec() : b.toTupleRef().elements().vec();
    ASSERT_EQ(x.size(), y.size()) << where;
    for (size_t i = 0; i < x.size(); ++i) expect_same_capture(x[i], y[i], where + "/" + std::to_string(i));
  } else {
    EXPECT_EQ(a.tagKind(), b.tagKind()) << where;
    EXPECT_EQ(c10::str(a), c10::str(b)) << where;
  }
}

c10::IValue fresh_module_capture(const torch::nn::Module& module) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& item : state_dict(module)) d.insert(item.key(), item.value());
  return d;
}

void one_step(testing::Net& net, torch::optim::Optimizer& optimizer) {
  optimizer.zero_grad();
  net->forward(torch::ones({4, 3})).sum().backward();
  optimizer.step();
}

TEST(CachedCapture, AModuleIsCapturedOnceWhileItKeepsItsTensors) {
  testing::Net net;
  torch::optim::SGD optimizer(net->parameters(), 0.1);
  ModuleCapture captured(*net);
  const c10::IValue first = captured.capture();
  for (int step = 0; step < 3; ++step) {
    one_step(net, optimizer);  // in place: parameters and the batch norm's running stats
    const c10::IValue again = captured.capture();
    EXPECT_TRUE(again.isSameIdentity(first)) << "step " << step;
    expect_same_capture(again, fresh_module_capture(*net));
  }
  EXPECT_EQ(captured.rebuilds(), 1);
}

TEST(CachedCapture, EveryChangeToAModulesTensorsOrChildrenBuildsItsCaptureAgain) {
  testing::Net net;
  ModuleCapture captured(*net);
  captured.capture();
  const std::vector<std::pair<std::string, std::function<void()>>> changes = {
      {"set_data with another tensor",
       [&] {
         net->fc1->weight.set_data(torch::randn({4, 3}));
       }},
      {"set_data with a view",
       [&] {
         net->fc1->weight.set_data(torch::randn({3, 8}).t().narrow(0, 0, 4));
       }},
      {"module.to(double)", [&] { net->to(torch::kDouble); }},
      {"a new parameter", [&] { net->fc1->register_parameter("scale", torch::ones({1}, torch::kDouble)); }},
      {"a new buffer", [&] { net->register_buffer("seen", torch::zeros({2})); }},
      {"a child replaced", [&] { net->replace_module("fc1", torch::nn::Linear(3, 4)); }},
      {"a child renamed, the same module",
       [&] {
         auto child = net->named_children()["fc1"];
         net->unregister_module("fc1");
         net->register_module("first", child);
       }},
  };
  int64_t rebuilds = captured.rebuilds();
  for (const auto& [change, apply] : changes) {
    apply();
    const c10::IValue now = captured.capture();
    EXPECT_EQ(captured.rebuilds(), ++rebuilds) << change;
    expect_same_capture(now, fresh_module_capture(*net), change);
    captured.capture();
    EXPECT_EQ(captured.rebuilds(), rebuilds) << change << ": the next capture reuses it";
  }
}

TEST(CachedCapture, TheModulesParameterStoragesAreTheLastCapturesWithoutBuffers) {
  testing::Net net;
  ModuleCapture captured(*net);
  captured.capture();
  std::unordered_set<const void*> storages;
  captured.parameter_storages(storages);
  std::unordered_set<const void*> expected;
  for (const auto& p : net->parameters()) expected.insert(p.storage().unsafeGetStorageImpl());
  EXPECT_EQ(storages, expected);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& kind,
                                                        std::vector<at::Tensor> params) {
  using namespace torch::optim;
  if (kind == "SGD") return std::make_unique<SGD>(params, SGDOptions(0.1).momentum(0.9));
  if (kind == "Adam") return std::make_unique<Adam>(params, AdamOptions(0.01).amsgrad(true));
  if (kind == "AdamW") return std::make_unique<AdamW>(params, AdamWOptions(0.01));
  if (kind == "RMSprop")
    return std::make_unique<RMSprop>(params, RMSpropOptions(0.01).momentum(0.5).centered(true));
  if (kind == "Adagrad") return std::make_unique<Adagrad>(params, AdagradOptions(0.1));
  return std::make_unique<LBFGS>(params, LBFGSOptions(0.5).max_iter(3).history_size(2));
}

void lbfgs_aware_step(testing::Net& net, torch::optim::Optimizer& optimizer) {
  optimizer.step([&] {
    optimizer.zero_grad();
    auto loss = net->forward(torch::ones({4, 3})).pow(2).sum();
    loss.backward();
    return loss;
  });
}

TEST(CachedCapture, AnOptimizerCaptureFollowsEveryStepAndScheduleChangeInPlace) {
  for (const std::string kind : {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS"}) {
    testing::Net net;
    auto optimizer = make_optimizer(kind, net->parameters());
    OptimizerCapture captured(*optimizer);
    expect_same_capture(captured.capture(), optimizer_state_dict(*optimizer), kind + " before any step");
    lbfgs_aware_step(net, *optimizer);  // state appears
    expect_same_capture(captured.capture(), optimizer_state_dict(*optimizer), kind + " after the first step");
    const int64_t rebuilds = captured.rebuilds();
    // One at first, one when the state appeared (Adagrad makes its state in its constructor).
    EXPECT_EQ(rebuilds, kind == "Adagrad" ? 1 : 2) << kind;
    for (int step = 0; step < 4; ++step) {
      lbfgs_aware_step(net, *optimizer);
      for (auto& group : optimizer->param_groups()) group.options().set_lr(0.5 / (step + 1));  // a schedule
      expect_same_capture(captured.capture(), optimizer_state_dict(*optimizer),
                          kind + " step " + std::to_string(step));
    }
    EXPECT_EQ(captured.rebuilds(), rebuilds) << kind;
    const c10::IValue last = captured.capture();
    const auto groups = last.toGenericDict().at("param_groups").toList();
    EXPECT_EQ(groups.get(0).toGenericDict().at("lr").toDouble(), 0.5 / 4) << kind;
  }
}

// The step counts (a float32 0-dim tensor per parameter, as Python 1.13
// keeps them) are written into the last capture's tensors, not made anew: a
// capture of thousands of parameters allocates nothing. Their version moves on
// only when the count does, so a deferred copy still reading one sees the
// change (flush.overlap names it), and a second capture of the same step (the
// memory tier's) leaves it alone.
TEST(CachedCapture, AnOptimizersStepCountsAreUpdatedInPlaceAndTheirVersionsFollow) {
  testing::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(0.01));
  OptimizerCapture captured(optimizer);
  lbfgs_aware_step(net, optimizer);
  auto step_of = [](const c10::IValue& capture) {
    return capture.toGenericDict().at("state").toGenericDict().at(0).toGenericDict().at("step").toTensor();
  };
  const at::Tensor first = step_of(captured.capture());
  EXPECT_EQ(first.item<float>(), 1.0f);
  const auto version = first._version();
  const at::Tensor same_step = step_of(captured.capture());
  EXPECT_TRUE(same_step.is_same(first));
  EXPECT_EQ(same_step._version(), version) << "the same count: not written, its version unchanged";
  lbfgs_aware_step(net, optimizer);
  const at::Tensor next = step_of(captured.capture());
  EXPECT_TRUE(next.is_same(first)) << "the tensor of the last capture, updated";
  EXPECT_EQ(next.item<float>(), 2.0f);
  EXPECT_GT(next._version(), version) << "a new count moves its version on";
  expect_same_capture(captured.capture(), optimizer_state_dict(optimizer), "after in-place updates");
  EXPECT_EQ(captured.rebuilds(), 1) << "built once, at the first capture";
}

// An optimizer's per-parameter states are thousands of small dicts in a big
// model, kept by the capture (and staged again): each in the smallest hash
// table that holds it, not in one at most half full as c10::Dict keeps them.
TEST(CachedCapture, CapturedDictsTakeTheSmallestTables) {
  testing::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(0.01));
  lbfgs_aware_step(net, optimizer);
  ModuleCapture module(*net);
  OptimizerCapture captured(optimizer);
  auto expect_compact = [](const c10::IValue& value, const std::string& what) {
    const auto dict = value.toGenericDict();
    EXPECT_LT(util::dict_table(dict).bucket_count(), 2 * std::max<size_t>(dict.size(), 2))
        << what << ": " << dict.size() << " entries";
  };
  expect_compact(module.capture(), "the module's state dict");
  const auto state = captured.capture().toGenericDict().at("state");
  expect_compact(state, "the optimizer's state");
  for (const auto& entry : state.toGenericDict()) {
    EXPECT_EQ(entry.value().toGenericDict().size(), 3u);
    expect_compact(entry.value(), "parameter " + c10::str(entry.key()));
  }
  expect_same_capture(captured.capture(), optimizer_state_dict(optimizer));
}

// Staging walks an optimizer's "state" dict again only when its generation
// moves on: steps that only write into its tensors (SGD's momentum, Adam's
// moments and step counts) leave it; a state tensor replaced by another
// object, a number that changed (LBFGS's counters) or a loaded state move it on.
TEST(CachedCapture, AnOptimizersStateGenerationMovesOnWhenAValueIsReplaced) {
  for (const std::string kind : {"SGD", "Adam", "AdamW", "Adagrad", "LBFGS"}) {
    testing::Net net;
    auto optimizer = make_optimizer(kind, net->parameters());
    OptimizerCapture captured(*optimizer);
    lbfgs_aware_step(net, *optimizer);
    captured.capture();
    const int64_t generation = captured.state_generation();
    lbfgs_aware_step(net, *optimizer);
    const c10::IValue after_step = captured.capture();
    expect_same_capture(after_step, optimizer_state_dict(*optimizer), kind);
    if (kind == "LBFGS") {
      EXPECT_GT(captured.state_generation(), generation) << "its counters are numbers in the state";
    } else {
      EXPECT_EQ(captured.state_generation(), generation) << kind << ": a step writes into the same tensors";
    }
  }
  testing::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(0.01));
  OptimizerCapture captured(optimizer);
  lbfgs_aware_step(net, optimizer);
  captured.capture();
  int64_t generation = captured.state_generation();
  auto& state = static_cast<torch::optim::AdamParamState&>(*optimizer.state().begin()->second);
  state.exp_avg(state.exp_avg().clone());
  expect_same_capture(captured.capture(), optimizer_state_dict(optimizer), "a moment replaced");
  EXPECT_GT(captured.state_generation(), generation) << "a tensor replaced by another object";
  generation = captured.state_generation();
  captured.capture();
  EXPECT_EQ(captured.state_generation(), generation) << "nothing changed since";
  testing::TempDir dir;
  save(optimizer_state_dict(optimizer), dir.file("state.pt"));
  load_optimizer_state_dict(optimizer, load(dir.file("state.pt")));
  captured.capture();
  EXPECT_GT(captured.state_generation(), generation) << "a loaded state";
}

// A capture compares each state object with what it saw last, one number per
// entry, and writes only the step counts itself: any other change (an entry
// that comes or goes, a tensor replaced together with a new count) still
// gives what a fresh optimizer_state_dict() would.
TEST(CachedCapture, AnOptimizerStateEntryThatComesGoesOrIsReplacedIsCapturedAsAFreshDictWould) {
  testing::Net net;
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(0.01));
  OptimizerCapture captured(adam);
  lbfgs_aware_step(net, adam);
  captured.capture();
  auto& state = static_cast<torch::optim::AdamParamState&>(*adam.state().begin()->second);
  state.max_exp_avg_sq(torch::zeros_like(state.exp_avg()));
  expect_same_capture(captured.capture(), optimizer_state_dict(adam), "an optional entry that comes");
  state.max_exp_avg_sq(at::Tensor());
  expect_same_capture(captured.capture(), optimizer_state_dict(adam), "an optional entry that goes");
  state.step(41);
  state.exp_avg(state.exp_avg().clone());
  expect_same_capture(captured.capture(), optimizer_state_dict(adam), "a new count and a moment replaced");
  lbfgs_aware_step(net, adam);
  expect_same_capture(captured.capture(), optimizer_state_dict(adam), "the step after");
  EXPECT_EQ(captured.rebuilds(), 1) << "the same parameters and state objects all along";

  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  OptimizerCapture sgd_captured(sgd);
  lbfgs_aware_step(net, sgd);
  sgd_captured.capture();
  auto& buffer_state = static_cast<torch::optim::SGDParamState&>(*sgd.state().begin()->second);
  buffer_state.momentum_buffer(at::Tensor());
  expect_same_capture(sgd_captured.capture(), optimizer_state_dict(sgd), "a buffer that becomes None");
  buffer_state.momentum_buffer(torch::ones_like(net->parameters()[0]));
  expect_same_capture(sgd_captured.capture(), optimizer_state_dict(sgd), "a buffer again");
}

TEST(CachedCapture, AnOptimizerCaptureIsBuiltAgainForNewParametersOrALoadedState) {
  testing::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(0.01));
  OptimizerCapture captured(optimizer);
  lbfgs_aware_step(net, optimizer);
  testing::TempDir dir;
  save(optimizer_state_dict(optimizer), dir.file("earlier.pt"));  // its own tensors, not the live ones
  captured.capture();
  lbfgs_aware_step(net, optimizer);
  lbfgs_aware_step(net, optimizer);
  captured.capture();
  int64_t rebuilds = captured.rebuilds();

  // A restore: new state objects (one may well take a freed one's address).
  load_optimizer_state_dict(optimizer, load(dir.file("earlier.pt")));
  const c10::IValue restored = captured.capture();
  expect_same_capture(restored, optimizer_state_dict(optimizer), "after a load");
  EXPECT_EQ(restored.toGenericDict()
                .at("state")
                .toGenericDict()
                .at(0)
                .toGenericDict()
                .at("step")
                .toTensor()
                .item<float>(),
            1.0f);

  // A new param group.
  auto extra = torch::ones({2}, torch::requires_grad());
  optimizer.add_param_group(torch::optim::OptimizerParamGroup({extra}));
  expect_same_capture(captured.capture(), optimizer_state_dict(optimizer), "after add_param_group");
  EXPECT_EQ(captured.rebuilds(), ++rebuilds);
  (extra * 2).sum().backward();
  lbfgs_aware_step(net, optimizer);
  expect_same_capture(captured.capture(), optimizer_state_dict(optimizer),
                      "after the new group's first step");
}

}  // namespace
}  // namespace state
}  // namespace autosnap
