// Configuration: defaults, environment expansion, and one clear error per
// kind of bad input, naming file:line:column, the key and what was expected.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/config.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::TempDir;

// What parsing `yaml` and then checking its environment (as a Snapshotter does) throws.
std::string config_error(const std::string& yaml) {
  try {
    Config::from_string(yaml, "test.yaml").check_environment(default_file_system());
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Config, DefaultsAndFullFile) {
  TempDir dir;
  auto c = Config::from_string("directory: " + dir.path() + "\n", "test.yaml");
  EXPECT_EQ(c.directory, dir.path());
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.resume, ResumeMode::kAuto);
  EXPECT_EQ(c.triggers.every_steps, 0);
  EXPECT_TRUE(c.triggers.on_train_end);
  EXPECT_EQ(c.retention.keep_last, 3);
  EXPECT_EQ(c.flush.mode, FlushMode::kAsync);
  EXPECT_EQ(c.flush.max_pending, 1);
  EXPECT_EQ(c.flush.when_busy, WhenBusy::kWait);
  EXPECT_EQ(c.flush.direct_io, DirectIo::kAuto) << "the faster way, measured";
  EXPECT_TRUE(c.flush.fsync);
  EXPECT_EQ(c.signals.snapshot, std::vector<int>{SIGUSR1});
  EXPECT_EQ(c.signals.snapshot_and_stop, std::vector<int>{SIGTERM});
  EXPECT_TRUE(c.control.socket);
  EXPECT_EQ(c.control_socket_path(), dir.path() + "/control.sock");
  EXPECT_EQ(c.on_error, OnError::kWarn);
  EXPECT_EQ(c.max_consecutive_failures, 3);
  EXPECT_EQ(c.distributed.port, 0) << "published in the directory";
  EXPECT_EQ(c.distributed.on_lost_rank, OnLostRank::kExit);

  auto full = Config::from_string(
      "directory: " + dir.path() +
          "\ndevice: cpu\nresume: required\n"
          "triggers: {every_steps: 500, every_seconds: 900.5, on_epoch_end: true, on_train_end: false}\n"
          "retention: {keep_last: 5, keep_every_steps: 1000}\n"
          "flush: {mode: sync, max_pending: 2, when_busy: skip, staging_memory_limit: 2GiB, fsync: false, "
          "overlap: true, threads: 3, direct_io: never}\n"
          "signals: {snapshot: [USR2], snapshot_and_stop: [SIGTERM, SIGINT], after_stop: requeue, exit_code: "
          "3}\n"
          "control: {socket: false, socket_path: /tmp/x.sock}\n"
          "capture: {rng: false}\nrestore: {strict: false, max_attempts: 5}\non_error: abort\n"
          "max_consecutive_failures: 0\n"
          "distributed: {backend: gloo, timeout_seconds: 60, port: 29600, on_lost_rank: throw}\nlog_level: "
          "debug\n",
      "full.yaml");
  EXPECT_EQ(full.resume, ResumeMode::kRequired);
  EXPECT_EQ(full.triggers.every_steps, 500);
  EXPECT_DOUBLE_EQ(full.triggers.every_seconds, 900.5);
  EXPECT_DOUBLE_EQ(
      Config::from_string("directory: /tmp\ntriggers: {max_overhead: 0.02, on_train_end: false}\n")
          .triggers.max_overhead,
      0.02)
      << "max_overhead alone is a trigger";
  EXPECT_EQ(full.retention.keep_every_steps, 1000);
  EXPECT_EQ(full.flush.staging_memory_limit, 2ull << 30);
  EXPECT_EQ(full.flush.when_busy, WhenBusy::kSkip);
  EXPECT_TRUE(full.flush.overlap);
  EXPECT_EQ(full.flush.direct_io, DirectIo::kNever);
  EXPECT_EQ(full.signals.snapshot, std::vector<int>{SIGUSR2});
  EXPECT_EQ(full.signals.snapshot_and_stop, (std::vector<int>{SIGTERM, SIGINT}));
  EXPECT_EQ(full.signals.after_stop, AfterStop::kRequeue);
  EXPECT_FALSE(full.control.socket);
  EXPECT_FALSE(full.capture.rng);
  EXPECT_EQ(full.restore.max_attempts, 5);
  EXPECT_EQ(full.on_error, OnError::kAbort);
  EXPECT_EQ(full.distributed.backend, DistributedBackend::kGloo);
  EXPECT_EQ(full.max_consecutive_failures, 0);
  EXPECT_EQ(full.distributed.port, 29600);
  EXPECT_EQ(full.distributed.on_lost_rank, OnLostRank::kThrow);
  EXPECT_NE(config_error("directory: /tmp\nmax_consecutive_failures: -1\n")
                .find("max_consecutive_failures: expected a count of snapshots >= 0 (0: never an error)"),
            std::string::npos);
  EXPECT_NE(
      config_error("directory: /tmp\ndistributed: {on_lost_rank: wait}\n").find("distributed.on_lost_rank"),
      std::string::npos);
}

TEST(Config, TheShippedConfigFileParses) {
  TempDir dir;
  ::setenv("SLURM_JOB_ID", "4242", 1);
  auto text = default_file_system().read_small_file(
      std::string(AUTOSNAP_TEST_SOURCE_DIR) + "/../config/autosnap.yaml", 1 << 20);
  auto c = Config::from_string(text, "autosnap.yaml");
  EXPECT_EQ(c.directory, "checkpoints/4242");
  ::unsetenv("SLURM_JOB_ID");
  c = Config::from_string(text, "autosnap.yaml");
  EXPECT_EQ(c.directory, "checkpoints/local");
}

TEST(Config, TheMemoryTierIsOffUnlessItsSectionIsPresent) {
  EXPECT_FALSE(Config::from_string("directory: /tmp/x\n").memory.enabled);
  const auto defaults = Config::from_string("directory: /tmp/x\nmemory:\n");
  EXPECT_TRUE(defaults.memory.enabled);
  EXPECT_EQ(defaults.memory.every_steps, 1);
  EXPECT_EQ(defaults.memory.keep_last, 2);
  EXPECT_EQ(defaults.memory.directory, "/dev/shm");
  const auto c = Config::from_string(
      "directory: /tmp/x\nmemory: {every_steps: 5, keep_last: 3, replicas: 0, directory: /run/shm, "
      "size_limit: 2GiB}\n");
  EXPECT_EQ(c.memory.every_steps, 5);
  EXPECT_EQ(c.memory.keep_last, 3);
  EXPECT_EQ(c.memory.directory, "/run/shm");
  EXPECT_EQ(c.memory.size_limit, 2ull << 30);
  EXPECT_NE(config_error("directory: /tmp\nmemory: {keep_last: 0}\n").find("memory.keep_last"),
            std::string::npos);
  EXPECT_NE(config_error("directory: /tmp\nmemory: {every_step: 1}\n").find("did you mean `every_steps`"),
            std::string::npos);
  EXPECT_EQ(Config::from_string("directory: /tmp\nmemory: {replicas: 2}\n").memory.replicas, 2);
  EXPECT_NE(config_error("directory: /tmp\nmemory: {replicas: -1}\n").find("memory.replicas"),
            std::string::npos);
  EXPECT_NE(config_error("directory: /tmp\nmemory: {directory: ''}\n").find("memory.directory"),
            std::string::npos);
}

TEST(Config, EnvironmentExpansion) {
  TempDir dir;
  ::setenv("AUTOSNAP_TEST_ROOT", dir.path().c_str(), 1);
  ::unsetenv("AUTOSNAP_TEST_UNSET");
  auto c = Config::from_string("directory: ${AUTOSNAP_TEST_ROOT}/run-${AUTOSNAP_TEST_UNSET:-local}/$$x\n",
                               "t.yaml");
  EXPECT_EQ(c.directory, dir.path() + "/run-local/$x");
  EXPECT_NE(config_error("directory: ${AUTOSNAP_TEST_UNSET}/x\n")
                .find("test.yaml:1:12: directory: environment variable AUTOSNAP_TEST_UNSET is not set"),
            std::string::npos);
  EXPECT_NE(config_error("directory: ${AUTOSNAP_TEST_ROOT\n").find("unterminated '${'"), std::string::npos);
}

TEST(Config, EveryKindOfBadInputHasAClearError) {
  TempDir dir;
  const std::string d = "directory: " + dir.path() + "\n";
  struct Case {
    std::string yaml;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {"", {"test.yaml: the configuration is empty"}},
      {"- a\n- b\n", {"test.yaml:1:1", "expected a mapping of options"}},
      {"directory: [unclosed\n", {"test.yaml:", "not valid YAML"}},
      {"device: cpu\n", {"directory: missing"}},
      {d + "triggers:\n  every_step: 5\n",
       {"test.yaml:3:3: triggers.every_step: unknown key; did you mean `every_steps`?"}},
      {d + "retension: {keep_last: 2}\n",
       {"test.yaml:2:1: retension: unknown key; did you mean `retention`?"}},
      {d + "flush: {mode: sync}\nflush: {fsync: false}\n", {"test.yaml:3:1: flush: given twice"}},
      {d + "triggers: {every_steps: 1, every_steps: 2}\n", {"triggers.every_steps: given twice"}},
      {d + "? [a, b]\n: 1\n", {"test.yaml:2:3: keys must be plain names"}},
      {d + "colour: blue\n", {"test.yaml:2:1: colour: unknown key; expected one of: directory, device"}},
      {d + "triggers: {every_steps: -5}\n",
       {"test.yaml:2:25: triggers.every_steps: expected a positive number of steps, got '-5'"}},
      {d + "triggers: {every_steps: 0}\n",
       {"triggers.every_steps: expected a positive number of steps, got '0'"}},
      {d + "triggers: {every_steps: many}\n",
       {"triggers.every_steps: expected a positive number of steps, got 'many'"}},
      {d + "triggers: {every_seconds: 0}\n",
       {"triggers.every_seconds: expected a positive number of seconds, got '0'"}},
      {d + "triggers: {every_seconds: [1]}\n",
       {"triggers.every_seconds: expected a positive number of seconds"}},
      {d + "triggers: {on_train_end: maybe}\n",
       {"triggers.on_train_end: expected true or false, got 'maybe'"}},
      {d + "triggers: {on_train_end: false}\n", {"test.yaml:2:11: triggers: no trigger is enabled"}},
      {d + "triggers: {max_overhead: 1.5}\n",
       {"triggers.max_overhead: expected a fraction of training time below 1, e.g. 0.02 for 2 %"}},
      {d + "triggers: {max_overhead: 0}\n",
       {"triggers.max_overhead: expected a fraction of training time, e.g. 0.02 for 2 %, got '0'"}},
      {d + "resume: sometimes\n",
       {"test.yaml:2:9: resume: expected auto | never | required, got 'sometimes'"}},
      {d + "flush: {mode: lazy}\n", {"flush.mode: expected async | sync, got 'lazy'"}},
      {d + "flush: {when_busy: panic}\n", {"flush.when_busy: expected wait | skip, got 'panic'"}},
      {d + "flush: {direct_io: yes}\n", {"flush.direct_io: expected auto | always | never, got 'yes'"}},
      {d + "flush: {max_pending: 0}\n", {"flush.max_pending: expected a positive count, got '0'"}},
      {d + "flush: {staging_memory_limit: 2 parsecs}\n",
       {"flush.staging_memory_limit: expected a byte count"}},
      {d + "flush: {staging_memory_limit: -1}\n", {"flush.staging_memory_limit: expected a byte count"}},
      {d + "flush: 3\n", {"test.yaml:2:8: flush: expected a mapping of options"}},
      {d + "retention: {keep_last: -1}\n",
       {"retention.keep_last: expected a count >= 0 (0 keeps all), got '-1'"}},
      {d + "on_error: ignore\n", {"on_error: expected warn | abort, got 'ignore'"}},
      {d + "signals: {snapshot: [SIGBOGUS]}\n",
       {"signals.snapshot: expected a signal name", "got 'SIGBOGUS'"}},
      {d + "signals: {snapshot: [USR1], snapshot_and_stop: [USR1]}\n", {"SIGUSR1 is listed under both"}},
      {d + "signals: {after_stop: reboot}\n", {"signals.after_stop: expected exit | requeue, got 'reboot'"}},
      {d + "signals: {exit_code: 300}\n", {"signals.exit_code: expected an exit status 0..255"}},
      {d + "device: tpu\n",
       {"test.yaml:2:9: device: device 'tpu' is not supported: expected cpu, cuda or cuda:N"}},
      {d + "distributed: {backend: mpi}\n", {"distributed.backend: expected auto | none | gloo, got 'mpi'"}},
      {d + "log_level: loud\n", {"log_level: expected debug | info | warn | error | off, got 'loud'"}},
      {"directory: \"\"\n", {"directory: expected a non-empty path"}},
      {"directory: /proc/autosnap-cannot-exist\n",
       {"test.yaml:1:12: directory: '/proc/autosnap-cannot-exist' is not a writable directory"}},
  };
  for (const auto& c : cases) {
    const std::string message = config_error(c.yaml);
    for (const auto& fragment : c.fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "config:\n"
          << c.yaml << "\nexpected: " << fragment << "\ngot: " << message;
    }
  }
}

TEST(Config, CudaDeviceOnACpuBuildIsAConfigError) {
  TempDir dir;
  const auto message = config_error("directory: " + dir.path() + "\ndevice: cuda:0\n");
  if (message == "<no error>") GTEST_SKIP() << "this machine has CUDA";
  EXPECT_NE(message.find("test.yaml:2:9: device:"), std::string::npos) << message;
  EXPECT_NE(message.find("CUDA is not available"), std::string::npos) << message;
}

// Ranks that are threads of one process parse their configs at the same moment
// (the CI once failed on two threads' probe files sharing a name).
TEST(Config, ThreadsParsingOneDirectoryAtOnceAllSucceed) {
  TempDir dir;
  const std::string yaml = "directory: " + dir.path() + "\n";
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < errors.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200 && errors[t].empty(); ++i) {
        try {
          Config::from_string(yaml, "test.yaml").check_environment(default_file_system());
        } catch (const ConfigError& e) {
          errors[t] = e.what();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& error : errors) EXPECT_EQ(error, "");
}

TEST(Config, MissingFileIsAConfigError) {
  try {
    Config::from_file("/nonexistent/autosnap.yaml");
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/autosnap.yaml: cannot read"), std::string::npos)
        << e.what();
  }
}

TEST(Config, FromEnvWithoutAConfigIsDisabled) {
  ::unsetenv("AUTOSNAP_CONFIG");
  auto snap = Snapshotter::from_env();
  EXPECT_FALSE(snap.enabled());
  int64_t x = 1;
  snap.track("x", x);
  EXPECT_FALSE(snap.on_train_start().has_value());
  snap.on_step_end(0);
  snap.close();
  EXPECT_FALSE(snap.latest_step().has_value());
}

TEST(Config, FromEnvReadsTheNamedFile) {
  TempDir dir;
  testing::write_text(dir.file("a.yaml"),
                      "directory: " + dir.file("snaps") + "\ntriggers: {every_steps: 1}\n");
  ::setenv("AUTOSNAP_CONFIG", dir.file("a.yaml").c_str(), 1);
  auto snap = Snapshotter::from_env();
  ::unsetenv("AUTOSNAP_CONFIG");
  EXPECT_TRUE(snap.enabled());
  EXPECT_EQ(snap.config().triggers.every_steps, 1);
  EXPECT_EQ(snap.config().source, dir.file("a.yaml"));
}

}  // namespace
}  // namespace autosnap
