#include "daemon/coordinator.h"

#include <cstring>

#include "autosnap/errors.h"

namespace autosnap {
namespace daemon {

uint64_t Coordinator::bitwise_or(uint64_t mine, Channel channel) {
  std::string bytes(sizeof mine, '\0');
  std::memcpy(bytes.data(), &mine, sizeof mine);
  uint64_t all = 0;
  for (const auto& theirs : exchange(bytes, channel)) {
    if (theirs.size() != sizeof mine) throw CoordinationError("a rank sent flags of the wrong size");
    uint64_t flags = 0;
    std::memcpy(&flags, theirs.data(), sizeof flags);
    all |= flags;
  }
  return all;
}

std::vector<std::string> Coordinator::send_receive(const std::vector<std::pair<int, std::string_view>>& sends,
                                                   const std::vector<int>& receive_from, Channel) {
  if (sends.empty() && receive_from.empty()) return {};
  throw CoordinationError("this coordinator cannot send data from rank to rank");
}

std::string Coordinator::broadcast(const std::string& value, Channel channel) {
  return exchange(rank() == 0 ? value : std::string(), channel).front();
}

std::vector<std::string> Coordinator::gather(const std::string& value, Channel channel) {
  auto all = exchange(value, channel);
  if (rank() != 0) all.clear();
  return all;
}

}  // namespace daemon
}  // namespace autosnap
