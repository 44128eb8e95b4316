// Files cross between autosnap and Python's torch.save/torch.load both ways.
// Runs Debian's /usr/bin/python3 with python3-torch (installed by setup.sh).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "support/interop_cases.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;

testing::CommandResult run_python(const std::string& script, const std::string& arguments) {
  return testing::run_command(testing::shell_quote(testing::python()) + " " +
                              testing::shell_quote(testing::python_script(script)) + " " + arguments);
}

TEST(PythonInterop, PythonLoadsWhatCppSaved) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  for (const auto& [name, value] : testing::interop_cases()) save(value, dir.file(name + ".pt"));
  auto result = run_python("interop.py", "check " + testing::shell_quote(dir.path()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("all cases match"), std::string::npos) << result.output;
  std::cout << result.output;  // how many cases the restricted (weights_only) loader took too
  EXPECT_NE(result.output.find("cases also load with weights_only=True"), std::string::npos) << result.output;
}

TEST(PythonInterop, CppLoadsWhatPythonSaved) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  auto result = run_python("interop.py", "write " + testing::shell_quote(dir.path()));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  for (const auto& [name, value] : testing::interop_cases()) {
    EXPECT_EQ(testing::describe_difference(load(dir.file(name + ".pt")), value, name), "");
  }
  // Python's [x, x[:5]] keeps its sharing; its clone does not share.
  auto shared = load(dir.file("shared.pt")).toList();
  shared.get(0).toTensor()[0] = 100;
  EXPECT_EQ(shared.get(1).toTensor()[0].item<float>(), 100.0f);
  auto cloned = load(dir.file("cloned.pt")).toList();
  cloned.get(0).toTensor()[0] = 100;
  EXPECT_EQ(cloned.get(1).toTensor()[0].item<float>(), 0.0f);
  // A Python state dict (OrderedDict with _metadata) loads strictly into the C++ module.
  testing::Net net;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.zero_();
  }
  load_state_dict(*net, load(dir.file("state_dict.pt")));
  EXPECT_EQ(testing::describe_difference(state_dict(*net), state_dict(*testing::Net())), "");
  // Typed accessors work on what was loaded.
  auto typed = c10::impl::toTypedDict<std::string, at::Tensor>(load(dir.file("dict.pt")).toGenericDict());
  EXPECT_EQ(typed.at("x").sizes(), (std::vector<int64_t>{2, 2}));
}

// Files written by PyTorch 2.11's torch.save (tests/data/pytorch-2.11, see
// make.sh there): its zip holds .format_version, .storage_alignment, byteorder
// and 64-byte aligned records that LibTorch 1.13 never writes.
TEST(PythonInterop, CppLoadsWhatPyTorch211Saved) {
  const std::string dir = testing::test_data("pytorch-2.11");
  for (const auto& [name, value] : testing::interop_cases()) {
    EXPECT_EQ(testing::describe_difference(load(dir + "/" + name + ".pt"), value, name), "");
  }
  auto shared = load(dir + "/shared.pt").toList();
  shared.get(0).toTensor()[0] = 100;
  EXPECT_EQ(shared.get(1).toTensor()[0].item<float>(), 100.0f);
  testing::Net net;
  load_state_dict(*net, load(dir + "/state_dict.pt"));
  // A state dict saved from cuda:0 tensors loads onto the CPU with the same values.
  EXPECT_EQ(testing::describe_difference(load(dir + "/cuda_state_dict.pt", "cpu"),
                                         load(dir + "/cuda_state_dict_cpu.pt")),
            "");
}

// The README's save/load snippets come from examples/seed_cases.cpp: it runs,
// says what the seed note promises, and Python loads every file it wrote.
TEST(PythonInterop, SeedCasesExampleRunsAndPythonLoadsItsFiles) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  auto run = testing::run_command(testing::shell_quote(testing::example_path("seed_cases")) + " " +
                                  testing::shell_quote(dir.file("out")));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* line :
       {"equal: true", "the loaded view starts with 100", "the loaded clone starts with 0",
        "loaded 4 tensors into a fresh Net", "resumed at epoch 5", "fc1.weight is on cpu"}) {
    EXPECT_NE(run.output.find(line), std::string::npos) << line << " missing from:\n" << run.output;
  }
  auto python = testing::run_python_code(
      "import glob, sys, torch\n"
      "files = sorted(glob.glob(sys.argv[1] + '/*.pt'))\n"
      "for f in files: torch.load(f)\n"
      "a, b = torch.load(sys.argv[1] + '/x_and_view.pt'); a[0] = 7\n"
      "assert b[0].item() == 7, 'view sharing lost'\n"
      "print(len(files), 'files loaded')\n",
      dir.file("out"));
  EXPECT_EQ(python.exit_code, 0) << python.output;
  EXPECT_NE(python.output.find("8 files loaded"), std::string::npos) << python.output;
}

// Zip64: one record of more than 4 GiB, and a record that starts after it.
// Python compares every byte of it, and so does autosnap::load.
TEST(PythonInterop, PythonLoadsAFileOverFourGiBAndCppReadsItBack) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  const int64_t size = (4ll << 30) + 4099;
  const auto big = torch::arange(251, torch::kUInt8).repeat({size / 251 + 1}).narrow(0, 0, size);
  c10::Dict<std::string, at::Tensor> value;
  value.insert("big", big);
  value.insert("after", torch::arange(10.0));
  save(value, dir.file("big.pt"));
  auto python = testing::run_python_code(
      "import torch, sys\n"
      "d = torch.load(sys.argv[1] + '/big.pt')\n"
      "b, n = d['big'], " +
          std::to_string(size) +
          "\n"
          "assert b.numel() == n and b.dtype == torch.uint8, (b.numel(), b.dtype)\n"
          "idx = torch.tensor([0, 250, 251, 2**32 - 1, 2**32, 2**32 + 1, n - 1])\n"
          "assert torch.equal(b[idx].long(), idx % 251), b[idx]\n"
          "pattern = torch.arange(251, dtype=torch.uint8).repeat(1 << 18)\n"
          "assert all(torch.equal(c, pattern[:len(c)]) for c in b.split(len(pattern)))\n"
          "assert torch.equal(d['after'], torch.arange(10.0))\n"
          "print('file over 4 GiB loaded')\n",
      dir.path());
  EXPECT_EQ(python.exit_code, 0) << python.output;
  EXPECT_NE(python.output.find("file over 4 GiB loaded"), std::string::npos) << python.output;
  const auto loaded = load(dir.file("big.pt")).toGenericDict();
  EXPECT_TRUE(torch::equal(loaded.at("big").toTensor(), big));
  EXPECT_TRUE(torch::equal(loaded.at("after").toTensor(), torch::arange(10.0)));
}

TEST(PythonInterop, PythonObjectsAndLegacyFilesAreRefused) {
  AUTOSNAP_REQUIRE_PYTHON_TORCH();
  TempDir dir;
  auto result = testing::run_python_code(
      "import torch, sys\n"
      "class Secret:\n    pass\n"
      "torch.save({'obj': Secret()}, sys.argv[1] + '/object.pt')\n"
      "torch.save(torch.ones(2), sys.argv[1] + '/legacy.pt', "
      "_use_new_zipfile_serialization=False)\n"
      "torch.save(b'bytes', sys.argv[1] + '/bytes.pt')\n",
      dir.path());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  try {
    load(dir.file("object.pt"));
    ADD_FAILURE() << "a pickled Python object must be refused";
  } catch (const CorruptSnapshot& e) {
    EXPECT_NE(std::string(e.what()).find("refusing to load '__main__.Secret'"), std::string::npos)
        << e.what();
  }
  try {
    load(dir.file("legacy.pt"));
    ADD_FAILURE() << "a legacy-format file must be refused";
  } catch (const CorruptSnapshot& e) {
    EXPECT_NE(std::string(e.what()).find("legacy"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load(dir.file("bytes.pt")), CorruptSnapshot);
}

}  // namespace
}  // namespace autosnap
