// Operating a running job: `autosnap snapshot` and `status` through the
// control socket, SIGUSR1 / SIGTERM, refusal of other users, and a flood of
// bad clients that must not disturb training.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "autosnap/autosnap.h"
#include "autosnap/tools.h"
#include "control_client.h"
#include "daemon/control_protocol.h"
#include "support/test_util.h"

namespace autosnap {
namespace {

using testing::ChildProcess;
using testing::TempDir;
using namespace std::chrono_literals;

std::string cli() { return testing::shell_quote(AUTOSNAP_CLI_PATH); }

// A train_mlp that runs until it is stopped, with only manual snapshots.
struct RunningJob {
  explicit RunningJob(const TempDir& dir, const std::string& extra_config = "",
                      const std::vector<std::string>& model_size = {}) {
    testing::write_text(dir.file("autosnap.yaml"),
                        "directory: " + dir.file("snaps") +
                            "\ntriggers: {every_steps: 1000000000, on_train_end: false}\n"
                            "retention: {keep_last: 0}\n" +
                            extra_config);
    directory = dir.file("snaps");
    std::vector<std::string> argv{testing::example_path("train_mlp"),
                                  "--config",
                                  dir.file("autosnap.yaml"),
                                  "--steps",
                                  "100000000",
                                  "--sleep-ms",
                                  "20",
                                  "--log-every",
                                  "1"};
    argv.insert(argv.end(), model_size.begin(), model_size.end());
    job = std::make_unique<ChildProcess>(argv);
    EXPECT_TRUE(job->wait_for_line("step ")) << job->output();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (step() < 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  }
  // Asks the job directly (the `autosnap` command would add its own start-up time).
  nlohmann::json request(const nlohmann::json& message) const {
    return control::send_request(directory + "/control.sock", message, std::chrono::seconds(30));
  }
  int64_t step() const {
    auto s = request({{"cmd", "status"}});
    return s["step"].is_null() ? -1 : s["step"].get<int64_t>();
  }
  std::vector<SnapshotInfo> snapshots() const { return SnapshotStore::open_read_only(directory)->list(); }
  bool snapshot_in_progress() const {
    for (const auto& entry : default_file_system().list_directory(directory)) {
      if (entry.name.find(".tmp-") != std::string::npos) return true;
    }
    return false;
  }
  bool wait_for_reason(const std::string& reason, std::chrono::seconds limit = 20s) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      for (const auto& info : snapshots()) {
        if (info.manifest && info.manifest->reason == reason) return true;
      }
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  std::string directory;
  std::unique_ptr<ChildProcess> job;
};

TEST(Control, SnapshotCommandCommitsWithinAStepAndStatusReportsProgress) {
  TempDir dir;
  RunningJob run(dir);
  // The protocol: the reply comes once the snapshot is committed, taken at the
  // first step boundary after the request arrived.
  const int64_t before = run.step();
  ASSERT_GE(before, 0);
  struct stat socket_status {};
  ASSERT_EQ(::stat((run.directory + "/control.sock").c_str(), &socket_status), 0);
  EXPECT_EQ(socket_status.st_mode & 0777, 0600u) << "only the owner may connect";
  auto reply = run.request({{"cmd", "snapshot"}, {"reason", "protocol"}});
  ASSERT_TRUE(reply["ok"].get<bool>()) << reply.dump();
  ASSERT_TRUE(reply["requested_after_step"].is_number()) << reply.dump();
  EXPECT_GE(reply["requested_after_step"].get<int64_t>(), before);
  EXPECT_EQ(reply["step"].get<int64_t>(), reply["requested_after_step"].get<int64_t>() + 1)
      << "the snapshot must be taken within one step of the request: " << reply.dump();

  // The command (its own start-up takes a while, so only the output is checked).
  auto result = testing::run_command(cli() + " snapshot " + testing::shell_quote(run.directory) +
                                     " --reason 'before upgrade' --timeout 30");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::smatch match;
  ASSERT_TRUE(
      std::regex_search(result.output, match, std::regex("snapshot committed: step ([0-9]+) at (\\S+)")))
      << result.output;
  const int64_t step = std::stoll(match[1]);
  bool found = false;
  for (const auto& info : run.snapshots()) {
    if (info.step == step) {
      found = true;
      EXPECT_EQ(info.status, SnapshotStatus::kValid);
      EXPECT_EQ(info.manifest->reason, "before upgrade");
      EXPECT_EQ(info.path, match[2].str());
    }
  }
  EXPECT_TRUE(found);

  auto status = testing::run_command(cli() + " status " + testing::shell_quote(run.directory));
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("job: running (pid " + std::to_string(run.job->pid()) + ")"),
            std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("last committed: step " + std::to_string(step)), std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("newest valid snapshot: step " + std::to_string(step)), std::string::npos)
      << status.output;
  const int64_t later = run.step();
  EXPECT_GT(later, step) << "training goes on";
}

TEST(Control, SignalsSnapshotAndStopCleanly) {
  TempDir dir;
  // A model large enough (4096 x 4096, with Adam: ~200 MB a snapshot) that
  // its write can be caught in progress.
  RunningJob run(dir, "signals: {exit_code: 7}\n", {"--input", "4096", "--hidden", "4096"});
  run.job->kill(SIGUSR1);
  ASSERT_TRUE(run.wait_for_reason("signal SIGUSR1")) << run.job->output();
  const int64_t after_usr1 = run.step();
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (run.step() <= after_usr1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_GT(run.step(), after_usr1) << "SIGUSR1 must not stop training";

  run.job->kill(SIGTERM);
  const auto write_deadline = std::chrono::steady_clock::now() + 20s;
  while (!run.snapshot_in_progress() && std::chrono::steady_clock::now() < write_deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(run.snapshot_in_progress()) << "the stop snapshot was not caught while being written";
  run.job->kill(SIGTERM);  // a second SIGTERM while the first one's snapshot is being written
  run.job->read_all();
  EXPECT_EQ(run.job->wait(), 7) << run.job->output();
  EXPECT_NE(run.job->output().find("stopping after step"), std::string::npos) << run.job->output();
  EXPECT_TRUE(run.wait_for_reason("signal SIGTERM", 1s));
  auto verify = testing::run_command(cli() + " verify --all " + testing::shell_quote(run.directory));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  for (const auto& info : run.snapshots()) {
    EXPECT_EQ(info.status, SnapshotStatus::kValid) << info.name << ": " << info.problem;
  }
  EXPECT_FALSE(default_file_system().status(run.directory + "/control.sock").exists)
      << "a clean exit removes the socket";
}

TEST(Control, AnotherUserIsRefused) {
  if (::geteuid() != 0) {
    std::cout << "skipped: switching to user nobody needs root" << std::endl;
    GTEST_SKIP() << "switching to user nobody needs root";
  }
  TempDir dir;
  RunningJob run(dir);
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  // 1. The socket is mode 0600 (and the directory private): the kernel refuses.
  auto result = testing::run_command(as_nobody + cli() + " snapshot " + testing::shell_quote(run.directory) +
                                     " --timeout 5");
  EXPECT_EQ(result.exit_code, 4) << result.output;
  EXPECT_NE(result.output.find("permission denied"), std::string::npos) << result.output;
  // 2. Even when the file permissions are opened up, the server checks the peer's uid.
  ::chmod(dir.path().c_str(), 0755);
  ::chmod(run.directory.c_str(), 0755);
  ::chmod((run.directory + "/control.sock").c_str(), 0666);
  result = testing::run_command(as_nobody + cli() + " snapshot " + testing::shell_quote(run.directory) +
                                " --timeout 5");
  EXPECT_EQ(result.exit_code, 4) << result.output;
  EXPECT_NE(result.output.find("refused by the job: permission denied: uid 65534 may not control this job"),
            std::string::npos)
      << result.output;
  run.job->kill(SIGTERM);
  run.job->read_all();
  EXPECT_NE(run.job->output().find("refused a control connection from uid 65534"), std::string::npos)
      << run.job->output();
  for (const auto& info : run.snapshots())
    EXPECT_NE(info.manifest->reason, "manual") << "nobody's request ran";
}

int connect_to(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string read_reply(int fd) {
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string reply;
  char c;
  while (::recv(fd, &c, 1, 0) == 1 && c != '\n') reply += c;
  return reply;
}

TEST(Control, AFloodOfBadClientsLeavesTrainingAndTheSocketAlive) {
  TempDir dir;
  RunningJob run(dir);
  const std::string socket = run.directory + "/control.sock";
  const int64_t start = run.step();
  std::this_thread::sleep_for(1s);
  const int64_t baseline = run.step() - start;  // steps per second, undisturbed
  ASSERT_GT(baseline, 5);

  std::atomic<int> malformed_replies{0}, oversized_replies{0}, status_replies{0};
  std::vector<int> idle;  // clients that connect and never send
  for (int i = 0; i < 30; ++i) {
    int fd = connect_to(socket);
    if (fd >= 0) idle.push_back(fd);
  }
  const int64_t flood_start = run.step();
  const auto flood_began = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int round = 0; std::chrono::steady_clock::now() - flood_began < 3s; ++round) {
        int fd = connect_to(socket);
        if (fd < 0) continue;
        std::string line;
        switch ((t + round) % 4) {
          case 0: line = "this is not json\n"; break;
          case 1: line = std::string(10000, 'x'); break;  // too long, no newline
          case 2: line = "{\"cmd\": \"status\"}\n"; break;
          case 3: line = std::string("\x01\x02\xff{\"cmd\":", 9) + "\n"; break;
        }
        ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
        const std::string reply = read_reply(fd);
        if (reply.find("malformed request") != std::string::npos) ++malformed_replies;
        if (reply.find("request longer than") != std::string::npos) ++oversized_replies;
        if (reply.find("\"pid\"") != std::string::npos) ++status_replies;
        ::close(fd);
      }
    });
  }
  for (auto& c : clients) c.join();
  const double flood_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - flood_began).count();
  const int64_t flood_steps = run.step() - flood_start;
  // Past the connection limit a client is told so, not silently dropped.
  std::string over_limit_reply;
  for (size_t i = idle.size(); i <= control::kMaxSessions + 2 && over_limit_reply.empty(); ++i) {
    int fd = connect_to(socket);
    if (fd < 0) continue;
    ::send(fd, "{\"cmd\": \"ping\"}\n", 16, MSG_NOSIGNAL);
    const std::string reply = read_reply(fd);
    if (reply.find("too many control connections") != std::string::npos) over_limit_reply = reply;
    idle.push_back(fd);
  }
  EXPECT_NE(over_limit_reply, "") << "no refusal past " << control::kMaxSessions << " connections";
  for (int fd : idle) ::close(fd);

  EXPECT_GT(malformed_replies.load(), 0);
  EXPECT_GT(oversized_replies.load(), 0);
  EXPECT_GT(status_replies.load(), 0);
  std::cout << "training: " << baseline << " steps/s before, " << flood_steps / flood_seconds
            << " steps/s during the flood (" << flood_seconds << " s)" << std::endl;
  EXPECT_GT(flood_steps / flood_seconds, baseline * 0.3) << "the flood slowed training down";
  auto result =
      testing::run_command(cli() + " snapshot " + testing::shell_quote(run.directory) + " --timeout 30");
  EXPECT_EQ(result.exit_code, 0) << "the socket must still serve after the flood: " << result.output;
}

TEST(Control, StaleSocketIsReplacedAndALiveOneIsAnError) {
  TempDir dir;
  const std::string directory = dir.file("snaps");
  ::mkdir(directory.c_str(), 0755);
  {
    // A socket file whose process is gone.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, (directory + "/control.sock").c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ::close(fd);
  }
  auto config = Config::from_string("directory: " + directory + "\nlog_level: warn\n", "t.yaml");
  Snapshotter first(config);
  auto reply = testing::run_command(cli() + " status " + testing::shell_quote(directory));
  EXPECT_EQ(reply.exit_code, 0) << "the stale socket was replaced: " << reply.output;
  // A second process on the same socket path (another directory) is refused, naming our pid.
  testing::write_text(dir.file("other.yaml"), "directory: " + dir.file("other") +
                                                  "\ncontrol: {socket_path: " + directory +
                                                  "/control.sock}\nlog_level: warn\n");
  ChildProcess second(
      {testing::example_path("train_mlp"), "--config", dir.file("other.yaml"), "--steps", "5"});
  second.read_all();
  EXPECT_NE(second.wait(), 0) << "a live socket of another process must be an error:\n" << second.output();
  EXPECT_NE(
      second.output().find("served by another running process (pid " + std::to_string(::getpid()) + ")"),
      std::string::npos)
      << second.output();
  EXPECT_EQ(testing::run_command(cli() + " status " + testing::shell_quote(directory)).exit_code, 0)
      << "the refused process must leave the live socket alone";
}

// A job that trained one step with `control` and committed its snapshot; still running.
Snapshotter one_step_is_snapshotted(const std::string& directory, const std::string& control) {
  Snapshotter snap(Config::from_string("directory: " + directory + "\ntriggers: {every_steps: 1}\ncontrol: " +
                                           control + "\nlog_level: error\n",
                                       "t.yaml"));
  static int64_t value = 3;  // outlives the returned snapshotter
  snap.track("value", value);
  snap.on_step_end(0);
  snap.wait_until_finished();
  EXPECT_EQ(snap.all_steps(), std::vector<int64_t>{0});
  return snap;
}

bool exists(const std::string& path) {
  struct stat ignored {};
  return ::lstat(path.c_str(), &ignored) == 0;
}

TEST(Control, ASocketPathTooLongDisablesTheSocketNotTheSnapshots) {
  TempDir dir;
  const std::string long_path = dir.path() + "/" + std::string(120, 'x') + ".sock";
  auto job = one_step_is_snapshotted(dir.file("snaps"), "{socket_path: " + long_path + "}");
  EXPECT_FALSE(exists(long_path)) << "no socket file at the too-long path";
  EXPECT_FALSE(exists(dir.file("snaps") + "/control.sock")) << "nor at the default path";
}

TEST(Control, SocketOffServesNothing) {
  TempDir dir;
  const std::string directory = dir.file("snaps");
  auto job = one_step_is_snapshotted(directory, "{socket: false}");
  EXPECT_FALSE(exists(directory + "/control.sock")) << "control: {socket: false} made a socket";
  auto status = testing::run_command(cli() + " status " + testing::shell_quote(directory));
  EXPECT_EQ(status.exit_code, 3) << "the job must look not running to the command:\n" << status.output;
  EXPECT_NE(status.output.find("not running"), std::string::npos) << status.output;
}

}  // namespace
}  // namespace autosnap
