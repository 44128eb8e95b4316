// One rank of a job that exercises the c10d Coordinator (cluster_test.cpp
// starts N of them): every primitive and every daemon question, then an
// optional fault. Prints "rank R: <what> = <result>" lines; exits 0 when
// every answer was the expected one. With a fault, the ranks left print when
// their next exchange answered or failed ("answered after" / "error after").
//
//   coordinator_probe PORT [die-before-commit | hang-before-commit SECONDS]
//   (RANK, WORLD_SIZE, MASTER_ADDR from the environment; timeout 5 s)
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "autosnap/errors.h"
#include "cluster/c10d_coordinator.h"
#include "cluster/rank_discovery.h"

using autosnap::daemon::Channel;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const int port = std::atoi(argv[1]);
  const std::string fault = argc > 2 ? argv[2] : "";
  const auto info = autosnap::cluster::discover_rank();
  const int r = info.rank;
  bool ok = true;
  auto expect = [&](const std::string& what, const std::string& got, const std::string& want) {
    std::printf("rank %d: %s = %s\n", r, what.c_str(), got.c_str());
    if (got != want) {
      std::printf("rank %d: MISMATCH in %s: expected %s\n", r, what.c_str(), want.c_str());
      ok = false;
    }
  };
  try {
    const auto start = std::chrono::steady_clock::now();
    autosnap::cluster::C10dCoordinator::Options options;
    options.port = port;
    options.timeout = std::chrono::seconds(5);
    autosnap::cluster::C10dCoordinator coordinator(info, options);
    const double formed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("rank %d: formed in %.2f s\n", r, formed);
    std::fflush(stdout);
    const int world = coordinator.world_size();
    // A rank writing to a lost peer's Gloo socket must get an error it can
    // report, not die of SIGPIPE without a word.
    struct sigaction pipe_action {};
    ::sigaction(SIGPIPE, nullptr, &pipe_action);
    expect("SIGPIPE", pipe_action.sa_handler == SIG_IGN ? "ignored" : "not ignored", "ignored");
    expect("broadcast", coordinator.broadcast(r == 0 ? "from rank 0" : "ignored", Channel::kTraining),
           "from rank 0");
    auto gathered = coordinator.gather("r" + std::to_string(r) + std::string(r, 'x'), Channel::kWriter);
    std::string all;
    for (const auto& g : gathered) all += g + ";";
    std::string want;
    if (r == 0) {
      for (int i = 0; i < world; ++i) want += "r" + std::to_string(i) + std::string(i, 'x') + ";";
    }
    expect("gather", all, want);
    expect("any(rank 1 only)", coordinator.any(r == 1, Channel::kTraining) ? "true" : "false", "true");
    expect("any(none)", coordinator.any(false, Channel::kWriter) ? "true" : "false", "false");
    expect("bitwise_or", std::to_string(coordinator.bitwise_or(uint64_t{1} << r, Channel::kTraining)),
           std::to_string((uint64_t{1} << world) - 1));
    coordinator.barrier(Channel::kTraining);
    std::fflush(stdout);
    if (fault == "die-before-commit" && r == world - 1) ::kill(::getpid(), SIGKILL);
    if (fault == "hang-before-commit" && r == world - 1) {
      std::this_thread::sleep_for(std::chrono::seconds(argc > 3 ? std::atoi(argv[3]) : 30));
    }
    if (fault == "die-before-commit") {
      const auto asked = std::chrono::steady_clock::now();
      try {
        coordinator.any(false, Channel::kWriter);
        std::printf("rank %d: the writer's channel answered although a rank is gone\n", r);
        ok = false;
      } catch (const autosnap::CoordinationError& e) {
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
        std::printf("rank %d: error after %.2f s: %s\n", r, waited, e.what());
        try {
          coordinator.any(false, Channel::kWriter);
          ok = false;
        } catch (const autosnap::CoordinationError& again) {
          std::printf("rank %d: then at once: %s\n", r, again.what());
        }
      }
    }
    if (fault == "hang-before-commit") {
      // The group is formed again and waits one more timeout for the hung rank.
      const auto asked = std::chrono::steady_clock::now();
      try {
        const bool answer = coordinator.any(r == 0, Channel::kWriter);
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
        std::printf("rank %d: answered after %.2f s: %s\n", r, waited, answer ? "true" : "false");
        ok = answer;
      } catch (const autosnap::CoordinationError& e) {
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
        std::printf("rank %d: error after %.2f s: %s\n", r, waited, e.what());
      }
    }
  } catch (const std::exception& e) {
    std::printf("rank %d: FAILED: %s\n", r, e.what());
    ok = false;
  }
  std::fflush(stdout);
  return ok ? 0 : 1;
}
