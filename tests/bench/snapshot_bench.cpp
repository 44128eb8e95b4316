// autosnap side by side with what users would use instead, measured in one run.
//
// For checkpoints of several sizes (float32 parameters in tensors of up to 16 MiB,
// plus their Adam state) and for a many-tensor state (thousands of small tensors,
// like a transformer's state dict), it measures:
//   limits      memcpy (1 thread and all cores) into pre-touched buffers; a file of
//               the same size written + fsynced (buffered and O_DIRECT), and read back
//               cold, in the same directory
//   LibTorch    torch::save of model + optimizer (OutputArchive) + fsync; torch::load
//               (InputArchive) into them; torch::pickle_save + write + fsync
//   Python      torch.save + fsync; torch.load + load_state_dict (Debian's python3-torch)
//   autosnap    save (durable); load + load_state_dict; the training thread's stall
//               of an async and an overlapped snapshot; trigger to durable commit;
//               restore_latest() with every checksum verified
// and the peak resident memory each adds (VmHWM after clear_refs). Loads start
// from a cold page cache (posix_fadvise DONTNEED). Every figure is the median of
// --reps runs; ratios compare figures of this one run; three quarters of the free
// memory are touched once first (see prefault_free_memory), and four 128 MB saves
// let autosnap time both ways of writing big files on this disk first, as a job's
// first snapshots do (see time_both_ways_of_writing). Then a training loop whose
// snapshot takes longer than a step runs in blocks of 10 steps, with a snapshot
// (async, overlap) or none, the modes in turn (see measure_training_overhead).
//
//   snapshot_bench [--sizes-mb 64,512,2048] [--many-tensors 5000] [--reps 3]
//                  [--dir PATH] [--json FILE] [--python /usr/bin/python3] [--training-only]
#include <autosnap/autosnap.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_support.h"
#include "training_loop.h"

namespace {

using bench::Clock;
using bench::Figure;
using bench::measure;
using bench::ms_since;
using nlohmann::json;

constexpr int64_t kMaxTensorElements = 4 << 20;  // 16 MiB of float32

// Parameters of the given sizes (elements) with Adam state.
struct Workload {
  Workload(std::string label, std::vector<int64_t> numels)
      : label(std::move(label)), numels(std::move(numels)) {
    for (size_t i = 0; i < this->numels.size(); ++i) {
      model.register_parameter("p" + std::to_string(i), torch::randn({this->numels[i]}));
    }
    optimizer = std::make_unique<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-3));
    for (auto& p : model.parameters()) p.mutable_grad() = torch::ones_like(p);
    optimizer->step();  // creates the Adam state
  }
  void step() {
    torch::NoGradGuard no_grad;
    for (auto& p : model.parameters()) p.add_(1e-3);
  }
  uint64_t bytes() const {
    uint64_t elements = 0;
    for (int64_t n : numels) elements += static_cast<uint64_t>(n);
    return elements * 4 * 3;  // parameters + exp_avg + exp_avg_sq
  }
  size_t tensors() const { return numels.size() * 3; }
  c10::IValue checkpoint() const {
    return autosnap::dict({{"model_state_dict", autosnap::state_dict(model)},
                           {"optimizer_state_dict", autosnap::optimizer_state_dict(*optimizer)}});
  }

  std::string label;
  std::vector<int64_t> numels;
  torch::nn::Module model;
  std::unique_ptr<torch::optim::Adam> optimizer;
};

// A checkpoint of about `megabytes` in tensors of up to 16 MiB.
std::vector<int64_t> dense_numels(int64_t megabytes) {
  const int64_t parameter_elements = megabytes * 1000 * 1000 / 3 / 4;
  const int64_t count = (parameter_elements + kMaxTensorElements - 1) / kMaxTensorElements;
  return std::vector<int64_t>(static_cast<size_t>(count), parameter_elements / count);
}

// `count` parameters, alternately a 96x96 weight and its bias.
std::vector<int64_t> many_numels(int64_t count) {
  std::vector<int64_t> numels;
  for (int64_t i = 0; i < count; ++i) numels.push_back(i % 2 == 0 ? 96 * 96 : 96);
  return numels;
}

struct Options {
  int reps = 3;
  std::string directory;
  std::string python = "/usr/bin/python3";
  std::string python_script;
  int64_t forward_backward_ms = 500;
};

autosnap::Config snapshot_config(const std::string& directory, const std::string& extra,
                                 int every_steps = 1) {
  return autosnap::Config::from_string(
      "directory: " + directory + "\ntriggers: {every_steps: " + std::to_string(every_steps) +
          ", on_train_end: false}\n"
          "retention: {keep_last: 1}\ncontrol: {socket: false}\nlog_level: warn\n" +
          extra,
      "bench.yaml");
}

json figure_json(const Figure& f) { return {{"ms", f.ms}, {"peak_bytes", f.peak_bytes}}; }

// autosnap times its first big files of each size class on a device written
// each way, O_DIRECT and through the page cache, and from then on writes the
// faster way. Two files each way are saved here before measuring each size,
// so that every figure is of the way chosen rather than of the trial; their
// times go into the report (the chooser's own log line is silenced by the
// benchmark's log_level: warn).
json time_both_ways_of_writing(const std::string& directory, uint64_t bytes) {
  const c10::IValue state =
      autosnap::dict({{"weights", torch::zeros({static_cast<int64_t>(bytes / sizeof(float))})}});
  const std::string path = directory + "/trial.pt";
  json trial;
  for (const auto way : {autosnap::DirectIo::kAlways, autosnap::DirectIo::kNever}) {
    autosnap::set_direct_io(way);
    auto& times = trial[way == autosnap::DirectIo::kAlways ? "direct_ms" : "buffered_ms"];
    for (int i = 0; i < 2; ++i) {
      std::filesystem::remove(path);
      const auto start = bench::Clock::now();
      autosnap::save(state, path);
      times.push_back(bench::ms_since(start));
    }
  }
  autosnap::set_direct_io(autosnap::DirectIo::kAuto);
  std::filesystem::remove(path);
  return trial;
}

// Writes files as fast as this disk takes them, in 8 MiB pwrites, then fsync:
// through the page cache, or with O_DIRECT (whole 8 MiB blocks from aligned
// memory, the tail buffered), as autosnap writes big files.
class RawWriter {
 public:
  static constexpr uint64_t kChunk = 8 << 20;
  RawWriter() {
    void* aligned = nullptr;
    if (::posix_memalign(&aligned, 4096, kChunk) != 0) throw std::bad_alloc();
    block_.reset(static_cast<char*>(aligned));
    std::memset(block_.get(), 3, kChunk);
  }
  // Copies of one aligned block, with O_DIRECT.
  void write_direct(const std::string& path, uint64_t bytes) const { write(path, bytes, nullptr); }
  void write_buffered(const std::string& path, const char* source, uint64_t bytes) const {
    write(path, bytes, source);
  }

 private:
  void write(const std::string& path, uint64_t bytes, const char* source) const {
    const bool direct = source == nullptr;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
    if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
    for (uint64_t done = 0; done < bytes;) {
      const uint64_t size = std::min(kChunk, bytes - done);
      if (direct && size < kChunk) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_DIRECT);
      const ssize_t n = ::pwrite(fd, direct ? block_.get() : source + done, size, done);
      if (n <= 0) throw std::runtime_error("write " + path);
      done += n;
    }
    if (::fsync(fd) != 0) throw std::runtime_error("fsync " + path);
    ::close(fd);
  }

  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> block_;
};

// Bandwidth limits of this machine for `bytes` of data.
json measure_limits(uint64_t bytes, const Options& options) {
  std::vector<char> source(bytes, 1), target(bytes, 2);  // touched: no page faults in the timing
  const int reps = options.reps;
  const auto memcpy_1 = measure(reps, [&] { std::memcpy(target.data(), source.data(), bytes); });
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const auto memcpy_n = measure(reps, [&] {
    std::vector<std::thread> workers;
    const uint64_t slice = (bytes + threads - 1) / threads;
    for (unsigned t = 0; t < threads; ++t) {
      const uint64_t begin = std::min<uint64_t>(bytes, t * slice),
                     end = std::min<uint64_t>(bytes, begin + slice);
      workers.emplace_back(
          [&, begin, end] { std::memcpy(target.data() + begin, source.data() + begin, end - begin); });
    }
    for (auto& w : workers) w.join();
  });
  const std::string path = options.directory + "/limit.bin";
  const RawWriter raw;
  const auto remove = [&] { std::filesystem::remove(path); };
  const auto direct_write = measure(reps, remove, [&] { raw.write_direct(path, bytes); });
  const auto write = measure(reps, remove, [&] { raw.write_buffered(path, source.data(), bytes); });
  const auto read = measure(
      reps, [&] { bench::drop_cache(path); },
      [&] {
        const int fd = ::open(path.c_str(), O_RDONLY);
        for (uint64_t done = 0; done < bytes;) {
          const ssize_t n =
              ::pread(fd, target.data() + done, std::min(RawWriter::kChunk, bytes - done), done);
          if (n <= 0) throw std::runtime_error("read " + path);
          done += n;
        }
        ::close(fd);
      });
  std::filesystem::remove(path);
  auto mb_s = [&](const Figure& f) { return bytes / 1e3 / f.ms; };
  return {{"memcpy_1_thread_mb_s", mb_s(memcpy_1)},
          {"memcpy_threads", threads},
          {"memcpy_all_threads_mb_s", mb_s(memcpy_n)},
          {"write_fsync_mb_s", mb_s(write)},
          {"direct_write_fsync_mb_s", mb_s(direct_write)},
          {"cold_read_mb_s", mb_s(read)},
          {"write_fsync", figure_json(write)},
          {"direct_write_fsync", figure_json(direct_write)},
          {"cold_read", figure_json(read)}};
}

json measure_libtorch(Workload& work, const Options& options) {
  const std::string path = options.directory + "/libtorch.pt";
  const auto remove = [&] { std::filesystem::remove(path); };
  const auto save = measure(options.reps, remove, [&] {
    torch::serialize::OutputArchive archive, model, optimizer;
    work.model.save(model);
    work.optimizer->save(optimizer);
    archive.write("model", model);
    archive.write("optimizer", optimizer);
    archive.save_to(path);
    bench::fsync_file(path);
  });
  const std::string pickled = options.directory + "/pickled.pt";
  const auto pickle_save = measure(
      options.reps, [&] { std::filesystem::remove(pickled); },
      [&] {
        const std::vector<char> bytes = torch::pickle_save(work.checkpoint());
        std::ofstream(pickled, std::ios::binary)
            .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        bench::fsync_file(pickled);
      });
  std::filesystem::remove(pickled);
  return {{"torch_save", figure_json(save)}, {"pickle_save", figure_json(pickle_save)}};  // leaves `path`
}

json measure_python(const Workload& work, const Options& options) {
  if (options.python.empty()) return json::object();
  const std::string shapes = options.directory + "/shapes.json";
  std::ofstream(shapes) << json(work.numels).dump();
  const std::string command = "MALLOC_MMAP_THRESHOLD_=262144 " + options.python + " " +
                              options.python_script + " " + shapes + " " + options.directory + " " +
                              std::to_string(options.reps);
  std::string output;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    if (::pclose(pipe) != 0) throw std::runtime_error("failed: " + command);
  }
  std::filesystem::remove(shapes);
  return json::parse(output);
}

json measure_autosnap(Workload& work, const Options& options) {
  json result;
  const std::string path = options.directory + "/autosnap.pt";
  result["save"] = figure_json(measure(
      options.reps, [&] { std::filesystem::remove(path); },
      [&] { autosnap::save(work.checkpoint(), path); }));
  // The disk's speed drifts between minutes, and a write right after another
  // big one can be slowed by it (the host still writing the first back): the
  // save is also timed in pairs with the raw O_DIRECT write of as many bytes,
  // one right after the other, each first in every other pair.
  const RawWriter raw;
  std::vector<double> write_ms, save_ms, ratios;
  const std::string raw_path = options.directory + "/raw.bin";
  for (int pair = 0; pair < 2 * options.reps; ++pair) {
    for (const bool save_now : {pair % 2 == 1, pair % 2 == 0}) {
      std::filesystem::remove(save_now ? path : raw_path);
      const auto start = bench::Clock::now();
      if (save_now) {
        autosnap::save(work.checkpoint(), path);
      } else {
        raw.write_direct(raw_path, work.bytes());
      }
      (save_now ? save_ms : write_ms).push_back(bench::ms_since(start));
    }
    ratios.push_back(write_ms.back() / save_ms.back());
  }
  std::filesystem::remove(raw_path);  // the save's file stays: the loads read it
  result["save_paired"] = {
      {"direct_write_ms", write_ms}, {"save_ms", save_ms}, {"direct_write_share", bench::median(ratios)}};
  for (const bool overlap : {false, true}) {
    const std::string directory = options.directory + (overlap ? "/overlap" : "/async");
    std::vector<double> stalls, persists;
    double first_snapshot_peak = NAN;
    {
      bench::PeakMemory memory;  // the first snapshot allocates the staging buffers
      autosnap::Snapshotter snap(snapshot_config(directory, overlap ? "flush: {overlap: true}\n" : ""));
      snap.track("model_state_dict", work.model);
      snap.track("optimizer_state_dict", *work.optimizer);
      for (int r = 0; r <= options.reps; ++r) {
        snap.before_optimizer_step();
        work.step();
        const auto trigger = Clock::now();
        snap.on_step_end(r);
        double stall = ms_since(trigger);
        if (overlap) {  // the next step's forward and backward
          std::this_thread::sleep_for(std::chrono::milliseconds(options.forward_backward_ms));
          const auto wait = Clock::now();
          snap.before_optimizer_step();
          stall += ms_since(wait);
        }
        snap.wait_until_finished();
        if (r == 0) {
          first_snapshot_peak = static_cast<double>(memory.extra_bytes());
          continue;
        }
        stalls.push_back(stall);
        persists.push_back(ms_since(trigger));
      }
      snap.close();
    }
    const std::string name = overlap ? "overlap_snapshot" : "async_snapshot";
    result[name] = {{"stall_ms", bench::median(stalls)}, {"peak_bytes", first_snapshot_peak}};
    if (!overlap) {
      result["persist_ms"] = bench::median(persists);
    } else {
      std::filesystem::remove_all(directory);
    }
  }
  return result;
}

// torch::load, autosnap::load and restore_latest() of the files the saves left,
// interleaved within each repetition: on this virtual machine the cost of
// fresh memory (page faults) drifts, and each load allocates the whole state.
json measure_loads(Workload& work, const Options& options) {
  const std::string libtorch = options.directory + "/libtorch.pt", plain = options.directory + "/autosnap.pt",
                    snapshots = options.directory + "/async";
  std::map<std::string, std::vector<Figure>> runs;
  auto timed = [&](const std::string& name, const std::string& file, const std::function<void()>& load) {
    runs[name].push_back(measure(
        1, [&] { bench::drop_cache(file); }, load));
  };
  for (int r = 0; r < options.reps; ++r) {
    timed("torch_load", libtorch, [&] {
      torch::serialize::InputArchive archive, model, optimizer;
      archive.load_from(libtorch);
      archive.read("model", model);
      work.model.load(model);
      archive.read("optimizer", optimizer);
      work.optimizer->load(optimizer);
    });
    timed("load", plain, [&] {
      // Given up (take), the loaded tensors are installed as torch::load's are, not copied.
      c10::IValue loaded = autosnap::load(plain);
      autosnap::load_state_dict(work.model, autosnap::take(loaded, "model_state_dict"));
      autosnap::load_optimizer_state_dict(*work.optimizer, autosnap::take(loaded, "optimizer_state_dict"));
    });
    timed("restore", snapshots, [&] {
      autosnap::Snapshotter again(snapshot_config(snapshots, ""));
      again.track("model_state_dict", work.model);
      again.track("optimizer_state_dict", *work.optimizer);
      if (!again.restore_latest()) throw std::runtime_error("nothing restored from " + snapshots);
    });
  }
  std::filesystem::remove(libtorch);
  std::filesystem::remove(plain);
  std::filesystem::remove_all(snapshots);
  json result;
  for (const auto& [name, figures] : runs) {
    std::vector<double> times, peaks;
    for (const Figure& f : figures) {
      times.push_back(f.ms);
      peaks.push_back(f.peak_bytes);
    }
    result[name] = figure_json({bench::median(times), bench::median(peaks)});
  }
  return result;
}

std::string ratio(double value, double reference) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2fx", value / reference);
  return text;
}

void print_workload(const json& w) {
  const double mb = w["bytes"].get<double>() / 1e6;
  const auto ms = [&](const json& j) {
    return j.is_object() && j.contains("ms") ? j["ms"].get<double>() : NAN;
  };
  const auto peak = [&](const json& j) { return j["peak_bytes"].get<double>() / w["bytes"].get<double>(); };
  const json& lim = w["limits"];
  const json& lt = w["libtorch"];
  const json& py = w["python"];
  const json& as = w["autosnap"];
  const double torch_save = ms(lt["torch_save"]), torch_load = ms(lt["torch_load"]);
  std::printf("\n== %s: %.0f MB in %zu tensors ==\n", w["label"].get<std::string>().c_str(), mb,
              w["tensors"].get<size_t>());
  std::printf(
      "limits     memcpy %.0f MB/s (1 thread), %.0f MB/s (%d threads); write+fsync %.0f MB/s buffered, %.0f "
      "MB/s "
      "O_DIRECT; cold read %.0f MB/s\n",
      lim["memcpy_1_thread_mb_s"].get<double>(), lim["memcpy_all_threads_mb_s"].get<double>(),
      lim["memcpy_threads"].get<int>(), lim["write_fsync_mb_s"].get<double>(),
      lim["direct_write_fsync_mb_s"].get<double>(), lim["cold_read_mb_s"].get<double>());
  const json& trial = w["write_trial"];
  const auto mean = [](const json& two) { return (two[0].get<double>() + two[1].get<double>()) / 2; };
  std::printf(
      "save trial O_DIRECT %.0f, %.0f ms; page cache %.0f, %.0f ms: %s faster for autosnap at this size\n",
      trial["direct_ms"][0].get<double>(), trial["direct_ms"][1].get<double>(),
      trial["buffered_ms"][0].get<double>(), trial["buffered_ms"][1].get<double>(),
      mean(trial["direct_ms"]) <= mean(trial["buffered_ms"]) ? "O_DIRECT" : "the page cache");
  const auto row = [&](const char* what, double value, double reference, const char* of, double peak_ratio) {
    std::printf("%-34s %9.1f ms  %6s %-18s peak +%.2fx state\n", what, value, ratio(value, reference).c_str(),
                of, peak_ratio);
  };
  const double write_ms =
      std::min(lim["write_fsync"]["ms"].get<double>(), lim["direct_write_fsync"]["ms"].get<double>());
  const double read_ms = lim["cold_read"]["ms"].get<double>();
  row("torch::save + fsync", torch_save, write_ms, "of best write", peak(lt["torch_save"]));
  row("torch::pickle_save + write + fsync", ms(lt["pickle_save"]), torch_save, "of torch::save",
      peak(lt["pickle_save"]));
  if (py.contains("save"))
    row("python torch.save + fsync", ms(py["save"]), torch_save, "of torch::save", peak(py["save"]));
  row("autosnap::save", ms(as["save"]), torch_save, "of torch::save", peak(as["save"]));
  std::printf("%-34s %9s     %6s %-18s\n", "", "", ratio(ms(as["save"]), write_ms).c_str(), "of best write");
  std::printf("%-34s %9s     %5.0f %% of the O_DIRECT write's speed (median of %zu pairs)\n", "", "",
              100 * as["save_paired"]["direct_write_share"].get<double>(),
              as["save_paired"]["save_ms"].size());
  row("torch::load", torch_load, read_ms, "of cold read", peak(lt["torch_load"]));
  if (py.contains("load"))
    row("python torch.load + load_state_dict", ms(py["load"]), torch_load, "of torch::load",
        peak(py["load"]));
  row("autosnap::load + load_state_dict", ms(as["load"]), torch_load, "of torch::load", peak(as["load"]));
  row("restore_latest (XXH3 verified)", ms(as["restore"]), torch_load, "of torch::load", peak(as["restore"]));
  std::printf("%-34s %9.1f ms  %6s %-18s peak +%.2fx state\n", "async snapshot: training stall",
              as["async_snapshot"]["stall_ms"].get<double>(),
              ratio(as["async_snapshot"]["stall_ms"].get<double>(), torch_save).c_str(), "of torch::save",
              as["async_snapshot"]["peak_bytes"].get<double>() / w["bytes"].get<double>());
  std::printf("%-34s %9.1f ms  %6s %-18s peak +%.2fx state\n", "overlap snapshot: training stall",
              as["overlap_snapshot"]["stall_ms"].get<double>(),
              ratio(as["overlap_snapshot"]["stall_ms"].get<double>(), torch_save).c_str(), "of torch::save",
              as["overlap_snapshot"]["peak_bytes"].get<double>() / w["bytes"].get<double>());
  std::printf("%-34s %9.1f ms  %6s %-18s\n", "trigger to durable commit", as["persist_ms"].get<double>(),
              ratio(as["persist_ms"].get<double>(), torch_save).c_str(), "of torch::save");
  std::fflush(stdout);
}

json run_workload(const std::string& label, std::vector<int64_t> numels, const Options& options) {
  Workload work(label, std::move(numels));
  json w = {{"label", label}, {"bytes", work.bytes()}, {"tensors", work.tensors()}};
  w["limits"] = measure_limits(work.bytes(), options);
  w["write_trial"] = time_both_ways_of_writing(options.directory, work.bytes());
  w["libtorch"] = measure_libtorch(work, options);
  w["python"] = measure_python(work, options);
  w["autosnap"] = measure_autosnap(work, options);
  const json loads = measure_loads(work, options);
  w["libtorch"]["torch_load"] = loads["torch_load"];
  w["autosnap"]["load"] = loads["load"];
  w["autosnap"]["restore"] = loads["restore"];
  print_workload(w);
  return w;
}

// A distribution-free interval of at least 95 % for the median of `values`:
// between the k-th smallest and the k-th largest, for the largest k that
// leaves at most 2.5 % on either side (the binomial distribution of how many
// fall below the median). {NAN, NAN} for fewer than 6 values.
std::pair<double, double> median_interval(std::vector<double> values) {
  const size_t n = values.size();
  std::sort(values.begin(), values.end());
  // P(X <= j) for X ~ Binomial(n, 1/2).
  double below = 0, term = std::pow(0.5, static_cast<double>(n));
  size_t k = 0;
  for (size_t j = 0; j < n; ++j) {
    below += term;
    if (below > 0.025) break;
    k = j + 1;
    term = term * static_cast<double>(n - j) / static_cast<double>(j + 1);
  }
  if (k == 0) return {NAN, NAN};
  return {values[k - 1], values[n - k]};
}

// A small MLP trained on random batches, sized so a snapshot (about 200 MB with
// Adam) takes longer to write than one step takes to compute.
//
// In blocks of 10 steps, the modes in turn (none, async, overlap; the order
// rotates each round): a block starts with its snapshot, written while the
// block's other 9 steps run, and ends once it is committed. Each mode's block
// is compared with the no-snapshot block of the same round, a minute apart at
// most: this machine's speed drifts several-fold between minutes, which long
// runs of one mode after another turned into overheads of -5 % to +42 %.
json measure_training_overhead(const Options& options) {
  bench::TrainingLoop loop(4);
  constexpr int64_t kBlock = 10;  // the snapshot interval
  uint64_t weight_bytes = 0;
  for (const auto& p : loop.model->parameters()) weight_bytes += p.numel() * p.element_size();
  json result;
  result["write_trial"] =
      time_both_ways_of_writing(options.directory, 3 * weight_bytes);  // and Adam's moments
  const int rounds = 4 * options.reps;
  const std::vector<std::string> modes = {"none", "async", "overlap"};
  std::map<std::string, std::unique_ptr<autosnap::Snapshotter>> snaps;
  for (const auto& mode : modes) {
    if (mode == "none") continue;
    std::filesystem::remove_all(options.directory + "/train-" + mode);
    snaps[mode] = std::make_unique<autosnap::Snapshotter>(snapshot_config(
        options.directory + "/train-" + mode, mode == "overlap" ? "flush: {overlap: true}\n" : "", kBlock));
    loop.track(*snaps[mode]);
  }
  int64_t next_step = kBlock;  // a multiple of kBlock: every block's first step takes a snapshot
  auto run_block = [&](const std::string& mode) {
    autosnap::Snapshotter* hooks = mode == "none" ? nullptr : snaps[mode].get();
    const auto start = Clock::now();
    loop.train(hooks, next_step, kBlock);
    if (hooks) hooks->wait_until_finished();
    next_step += kBlock;
    return ms_since(start);
  };
  // Warm-up: the staging buffers are allocated. (The way of writing big files
  // was chosen before, by time_both_ways_of_writing: without it the first
  // rounds timed the trials, 7-13 % above the rounds after.)
  for (int r = 0; r < 3; ++r) {
    for (const auto& mode : modes) run_block(mode);
  }
  std::map<std::string, std::vector<double>> block_ms, relative;
  for (int r = 0; r < rounds; ++r) {
    std::map<std::string, double> this_round;
    for (size_t m = 0; m < modes.size(); ++m) {
      const std::string& mode = modes[(m + r) % modes.size()];
      this_round[mode] = run_block(mode);
      block_ms[mode].push_back(this_round[mode]);
    }
    for (const auto& mode : modes) relative[mode].push_back(this_round[mode] / this_round["none"] - 1);
  }
  for (auto& [mode, snap] : snaps) {
    snap->close();
    std::filesystem::remove_all(options.directory + "/train-" + mode);
  }
  result["rounds"] = rounds;
  for (const auto& mode : modes) {
    result[mode + "_steps_per_s"] = kBlock * 1000.0 / bench::median(block_ms[mode]);
    if (mode == "none") continue;
    result[mode + "_overhead"] = bench::median(relative[mode]);
    result[mode + "_overhead_by_round"] = relative[mode];
    const auto [low, high] = median_interval(relative[mode]);
    result[mode + "_overhead_interval"] = {low, high};
  }
  result["step_ms"] = bench::median(block_ms["none"]) / kBlock;
  // What one snapshot of this model costs to write, for comparison with a step.
  const std::string directory = options.directory + "/persist";
  autosnap::Snapshotter snap(snapshot_config(directory, ""));
  loop.track(snap);
  std::vector<double> persist;
  for (int r = 0; r <= options.reps; ++r) {
    const auto start = Clock::now();
    snap.on_step_end(r);
    snap.wait_until_finished();
    if (r > 0) persist.push_back(ms_since(start));
  }
  snap.close();
  std::filesystem::remove_all(directory);
  result["snapshot_persist_ms"] = bench::median(persist);
  std::printf(
      "\n== training overhead: MLP 4 x 2048x2048, Adam, one step %.1f ms, one snapshot %.1f ms to commit ==\n"
      "a snapshot every 10 steps, against the no-snapshot block of the same round (median of %d rounds, "
      "95%% interval): async %+.1f%% (%+.1f .. %+.1f%%), overlap %+.1f%% (%+.1f .. %+.1f%%); "
      "steps/s (medians): none %.2f, async %.2f, overlap %.2f\n",
      result["step_ms"].get<double>(), result["snapshot_persist_ms"].get<double>(), rounds,
      100 * result["async_overhead"].get<double>(), 100 * result["async_overhead_interval"][0].get<double>(),
      100 * result["async_overhead_interval"][1].get<double>(),
      100 * result["overlap_overhead"].get<double>(),
      100 * result["overlap_overhead_interval"][0].get<double>(),
      100 * result["overlap_overhead_interval"][1].get<double>(), result["none_steps_per_s"].get<double>(),
      result["async_steps_per_s"].get<double>(), result["overlap_steps_per_s"].get<double>());
  return result;
}

std::string machine_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return std::to_string(std::thread::hardware_concurrency()) + " cores (" + model + "), " +
         std::to_string(sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE) >> 30) + " GiB";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"autosnap benchmark against torch::save / torch::load / Python's torch.save"};
  std::vector<int64_t> sizes = {64, 512, 2048};
  int64_t many_tensors = 5000;
  Options options;
  options.directory = "bench-scratch";
  std::string json_path;
  bool training = true;
  bool training_only = false;
  app.add_option("--sizes-mb", sizes, "checkpoint sizes (MB) of the dense workloads")->delimiter(',');
  app.add_option("--many-tensors", many_tensors, "parameters of the many-tensor workload (0: skip it)");
  app.add_option("--reps", options.reps, "repetitions per figure (median)")->check(CLI::PositiveNumber);
  app.add_option("--dir", options.directory, "scratch directory on the disk to measure");
  app.add_option("--json", json_path, "write every figure to this JSON file");
  app.add_option("--python", options.python,
                 "Python with torch for the torch.save baseline (empty: skip it)");
  app.add_option("--python-script", options.python_script, "torch_python_baseline.py")
      ->default_val(AUTOSNAP_BENCH_PYTHON_SCRIPT);
  app.add_option("--forward-backward-ms", options.forward_backward_ms,
                 "time between on_step_end and before_optimizer_step in the overlap measurement");
  app.add_flag("!--no-training", training, "skip the training-overhead measurement");
  app.add_flag("--training-only", training_only, "only the training-overhead measurement");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(1);
  bench::return_freed_memory_to_the_kernel();
  const uint64_t prefaulted = bench::prefault_free_memory(0.75);
  std::filesystem::create_directories(options.directory);
  json report = {{"machine", machine_description()},
                 {"reps", options.reps},
                 {"torch_threads", 1},
                 {"forward_backward_ms", options.forward_backward_ms},
                 {"prefaulted_bytes", prefaulted}};
  std::printf("%s; LibTorch with 1 intra-op thread; medians of %d runs\n",
              report["machine"].get<std::string>().c_str(), options.reps);
  std::fflush(stdout);
  if (training_only) {
    sizes.clear();
    many_tensors = 0;
    training = true;
  }
  for (int64_t size : sizes) {
    report["workloads"].push_back(run_workload(std::to_string(size) + " MB", dense_numels(size), options));
  }
  if (many_tensors > 0) {
    report["workloads"].push_back(
        run_workload(std::to_string(many_tensors) + " small tensors", many_numels(many_tensors), options));
  }
  if (training) report["training"] = measure_training_overhead(options);
  if (!json_path.empty()) std::ofstream(json_path) << report.dump(2) << "\n";
  std::filesystem::remove_all(options.directory);
  return 0;
}
