#include "daemon/coordinator.h"

#include <algorithm>

namespace autosnap {
namespace daemon {

std::optional<int64_t> Coordinator::agree_on_step(std::optional<int64_t> newest_valid_here) {
  // Rank 0 collects every rank's answer ("" for none) and decides for all.
  const std::vector<std::string> answers =
      gather(newest_valid_here ? std::to_string(*newest_valid_here) : std::string(), Channel::kTraining);
  std::string decision;
  if (rank() == 0) {
    std::optional<int64_t> oldest;
    bool all_have_one = true;
    for (const auto& answer : answers) {
      if (answer.empty()) {
        all_have_one = false;
        break;
      }
      const int64_t step = std::stoll(answer);
      oldest = oldest ? std::min(*oldest, step) : step;
    }
    if (all_have_one && oldest) decision = std::to_string(*oldest);
  }
  decision = broadcast(decision, Channel::kTraining);
  if (decision.empty()) return std::nullopt;
  return std::stoll(decision);
}

}  // namespace daemon
}  // namespace autosnap
