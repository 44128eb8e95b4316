#include "cluster/c10d_coordinator.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <mutex>

#include "autosnap/errors.h"

#ifndef USE_C10D_GLOO
#error "USE_C10D_GLOO is not defined: ProcessGroupGloo.hpp would be empty (link ${TORCH_LIBRARIES})"
#endif

namespace autosnap {
namespace cluster {

using daemon::Channel;

struct C10dCoordinator::Group {
  std::string name;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::string broken;  // why it cannot be used any more

  // Runs one collective; any failure breaks the group for good.
  void run(const std::string& what, int rank, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
    if (!broken.empty()) {
      throw Error("rank " + std::to_string(rank) + ": cannot " + what + ": the " + name +
                  " coordination group failed earlier (" + broken + ")");
    }
    try {
      start()->wait();
    } catch (const std::exception& e) {
      broken = e.what();
      throw Error("rank " + std::to_string(rank) + ": " + what + " failed on the " + name +
                  " coordination group (a rank died, hung past distributed.timeout_seconds, or lost its "
                  "connection): " +
                  broken);
    }
  }
};

namespace {

std::string channel_name(Channel channel) { return channel == Channel::kTraining ? "training" : "writer"; }

}  // namespace

C10dCoordinator::C10dCoordinator(const RankInfo& info, int port, std::chrono::milliseconds timeout,
                                 c10::intrusive_ptr<c10d::Store> store)
    : rank_(info.rank), world_size_(info.world_size), timeout_(timeout), store_(std::move(store)) {
  const std::string where = "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + " (" +
                            info.source + ", " + info.master_addr + ":" + std::to_string(port) + ")";
  try {
    if (!store_) {
      c10d::TCPStoreOptions options;
      options.port = static_cast<std::uint16_t>(port);
      options.isServer = rank_ == 0;
      options.numWorkers = static_cast<size_t>(world_size_);
      options.waitWorkers = false;  // the groups' rendezvous below waits, with a timeout that throws
      options.timeout = timeout_;
      store_ = c10::make_intrusive<c10d::TCPStore>(info.master_addr, options);
    }
    for (Channel channel : {Channel::kTraining, Channel::kWriter}) {
      auto group = std::make_unique<Group>();
      group->name = channel_name(channel);
      auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
      // A job on one host talks over loopback; across hosts through this host's address.
      const bool loopback = info.master_addr == "localhost" || info.master_addr.rfind("127.", 0) == 0;
      options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                          : c10d::ProcessGroupGloo::createDefaultDevice());
      options->threads = 1;
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>("autosnap/" + group->name, store_);
      group->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank_, world_size_, options);
      (channel == Channel::kTraining ? training_ : writer_) = std::move(group);
    }
  } catch (const std::exception& e) {
    throw Error(where + ": cannot form autosnap's coordination groups within " +
                std::to_string(timeout_.count() / 1000) + " s (distributed.timeout_seconds): " + e.what());
  }
}

C10dCoordinator::~C10dCoordinator() = default;

C10dCoordinator::Group& C10dCoordinator::group(Channel channel) {
  return channel == Channel::kTraining ? *training_ : *writer_;
}

uint64_t C10dCoordinator::bitwise_or(uint64_t mine, Channel channel) {
  std::vector<at::Tensor> flags{at::full({1}, static_cast<int64_t>(mine), at::kLong)};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::BOR;
  Group& g = group(channel);
  g.run("agree", rank_, [&] { return g.pg->allreduce(flags, options); });
  return static_cast<uint64_t>(flags[0].item<int64_t>());
}

std::string C10dCoordinator::broadcast(const std::string& value, Channel channel) {
  Group& g = group(channel);
  std::vector<at::Tensor> length{at::full({1}, static_cast<int64_t>(value.size()), at::kLong)};
  g.run("broadcast", rank_, [&] { return g.pg->broadcast(length); });
  const int64_t size = length[0].item<int64_t>();
  if (size == 0) return "";
  at::Tensor bytes = at::empty({size}, at::kByte);
  if (rank_ == 0) std::memcpy(bytes.data_ptr(), value.data(), value.size());
  std::vector<at::Tensor> data{bytes};
  g.run("broadcast", rank_, [&] { return g.pg->broadcast(data); });
  return std::string(static_cast<const char*>(data[0].data_ptr()), static_cast<size_t>(size));
}

std::vector<std::string> C10dCoordinator::gather(const std::string& value, Channel channel) {
  // Gloo's gather needs equal sizes: share the lengths, then pad to the longest.
  Group& g = group(channel);
  std::vector<at::Tensor> mine{at::full({1}, static_cast<int64_t>(value.size()), at::kLong)};
  std::vector<std::vector<at::Tensor>> lengths(1);
  for (int r = 0; r < world_size_; ++r) lengths[0].push_back(at::empty({1}, at::kLong));
  g.run("gather", rank_, [&] { return g.pg->allgather(lengths, mine); });
  int64_t longest = 1;
  for (const auto& l : lengths[0]) longest = std::max(longest, l.item<int64_t>());
  std::vector<at::Tensor> padded{at::zeros({longest}, at::kByte)};
  std::memcpy(padded[0].data_ptr(), value.data(), value.size());
  std::vector<std::vector<at::Tensor>> all(1);
  for (int r = 0; r < world_size_; ++r) all[0].push_back(at::empty({longest}, at::kByte));
  g.run("gather", rank_, [&] { return g.pg->allgather(all, padded); });
  if (rank_ != 0) return {};
  std::vector<std::string> out;
  for (int r = 0; r < world_size_; ++r) {
    out.emplace_back(static_cast<const char*>(all[0][r].data_ptr()),
                     static_cast<size_t>(lengths[0][r].item<int64_t>()));
  }
  return out;
}

void C10dCoordinator::barrier(Channel channel) {
  Group& g = group(channel);
  g.run("wait at the barrier", rank_, [&] { return g.pg->barrier(); });
}

}  // namespace cluster
}  // namespace autosnap
