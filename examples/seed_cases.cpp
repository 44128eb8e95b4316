// The classic torch.save / torch.load cases, in C++ with autosnap:
// single tensors; lists, tuples and dicts; view sharing; a model's
// state_dict; a training checkpoint with epoch, loss and optimizer state;
// loading onto a device. Every file written here also loads in Python with
// torch.load. Run: seed_cases [DIRECTORY]
#include <autosnap/autosnap.h>
#include <torch/torch.h>
#include "example_errors.h"

#include <iostream>

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(4, 8))),
        fc2(register_module("fc2", torch::nn::Linear(8, 2))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

void section(const std::string& title) { std::cout << "\n== " << title << "\n"; }

}  // namespace

int main(int argc, char** argv) {
  return examples::run_reporting_errors("seed_cases", [&] {
    const std::string dir = argc > 1 ? argv[1] : "seed_cases_output";
    autosnap::create_directories(autosnap::default_file_system(), dir);

    section("a single tensor");
    auto x = torch::randint(100, {4, 4});
    autosnap::save(x, dir + "/x.pt");
    auto y = autosnap::load(dir + "/x.pt").toTensor();
    std::cout << "saved and loaded a " << y.sizes() << " tensor, equal: " << std::boolalpha
              << torch::equal(x, y) << "\n";

    section("lists, tuples and dicts of tensors");
    auto a = torch::randint(10, {2, 2}), b = torch::randint(100, {3, 3});
    autosnap::save(autosnap::list({a, b}), dir + "/a.pt");
    autosnap::save(autosnap::tuple({a, b}), dir + "/b.pt");
    autosnap::save(autosnap::dict({{"x", a}, {"y", b}}), dir + "/c.pt");
    auto c = autosnap::load(dir + "/c.pt");
    std::cout << "dict['y'] is " << autosnap::dict_at(c, "y").toTensor().sizes() << "\n";

    section("views keep sharing their storage; clone() breaks it");
    auto base = torch::arange(10);
    autosnap::save(autosnap::list({base, base.slice(0, 0, 5)}), dir + "/x_and_view.pt");
    autosnap::save(autosnap::list({base, base.slice(0, 0, 5).clone()}), dir + "/x_and_clone.pt");
    auto shared = autosnap::load(dir + "/x_and_view.pt").toList();
    shared.get(0).toTensor()[0] = 100;
    std::cout << "after x[0] = 100 the loaded view starts with "
              << shared.get(1).toTensor()[0].item<int64_t>() << "\n";
    auto cloned = autosnap::load(dir + "/x_and_clone.pt").toList();
    cloned.get(0).toTensor()[0] = 100;
    std::cout << "after x[0] = 100 the loaded clone starts with "
              << cloned.get(1).toTensor()[0].item<int64_t>() << "\n";

    section("a model's parameters (state_dict)");
    Net model;
    autosnap::save(autosnap::state_dict(model), dir + "/model.pt");
    Net restored;  // the class must be known to load a state_dict
    autosnap::load_state_dict(restored, autosnap::load(dir + "/model.pt"));
    restored->eval();  // for inference; train() to continue training
    std::cout << "loaded " << autosnap::state_dict(restored).size() << " tensors into a fresh Net\n";

    section("a training checkpoint: model, optimizer, epoch, loss");
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    auto loss = model->forward(torch::randn({16, 4})).pow(2).mean();
    loss.backward();
    optimizer.step();
    autosnap::save(autosnap::dict({{"epoch", 5},
                                   {"model_state_dict", autosnap::state_dict(model)},
                                   {"optimizer_state_dict", autosnap::optimizer_state_dict(optimizer)},
                                   {"loss", loss.item<double>()}}),
                   dir + "/checkpoint.pt");
    Net resumed;
    torch::optim::SGD resumed_optimizer(resumed->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    auto checkpoint = autosnap::load(dir + "/checkpoint.pt");
    autosnap::load_state_dict(resumed, autosnap::dict_at(checkpoint, "model_state_dict"));
    autosnap::load_optimizer_state_dict(resumed_optimizer,
                                        autosnap::dict_at(checkpoint, "optimizer_state_dict"));
    const auto epoch = autosnap::dict_at(checkpoint, "epoch").toInt();
    const auto saved_loss = autosnap::dict_at(checkpoint, "loss").toDouble();
    resumed->train();
    std::cout << "resumed at epoch " << epoch << " with loss " << saved_loss << "\n";

    section("loading onto a device (map_location)");
    auto on_cpu = autosnap::load(dir + "/model.pt", "cpu");
    std::cout << "map_location cpu: fc1.weight is on "
              << autosnap::dict_at(on_cpu, "fc1.weight").toTensor().device() << "\n";
    try {
      auto on_gpu = autosnap::load(dir + "/model.pt", "cuda:0");
      std::cout << "map_location cuda:0: fc1.weight is on "
                << autosnap::dict_at(on_gpu, "fc1.weight").toTensor().device() << "\n";
    } catch (const autosnap::Error& e) {
      std::cout << "map_location cuda:0: " << e.what() << "\n";
    }

    std::cout << "\nAll files are in " << dir << "/ and load in Python with torch.load().\n";
    return 0;
  });
}
