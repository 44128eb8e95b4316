#include "cluster/c10d_coordinator.h"

#include <signal.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <cstring>
#include <functional>

#include "autosnap/errors.h"
#include "cluster/c10d_message.h"
#include "util/log.h"

#ifndef USE_C10D_GLOO
#error "USE_C10D_GLOO is not defined: ProcessGroupGloo.hpp would be empty (link ${TORCH_LIBRARIES})"
#endif

namespace autosnap {
namespace cluster {
namespace {

using daemon::Channel;
using Clock = std::chrono::steady_clock;

// An exchange's header, one per rank: which exchange it is, the last one
// this rank completed, the message's size, and a short message itself (the
// per-step flags fit, so most exchanges take one collective).
constexpr int64_t kInlineWords = 5;
constexpr int64_t kHeaderWords = 3 + kInlineWords;
constexpr size_t kInlineBytes = kInlineWords * sizeof(int64_t);
enum HeaderWord { kSequence = 0, kDone = 1, kSize = 2, kInline = 3 };
constexpr int kMaxFormings = 3;  // per exchange: a group that keeps failing is a job that cannot go on

std::string host_name() {
  char name[256] = {0};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "unknown host";
}

// Gloo writes to its sockets with writev, so a write to a peer that is gone
// raises SIGPIPE, which ends a C++ process without a word (Python ignores
// SIGPIPE; C++ programs do not): a rank would vanish with status 141 before
// it could say which rank was lost. Ignored, the write fails with EPIPE and
// is reported. A handler the program installed itself is left alone.
void keep_broken_connections_from_killing_the_process() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) return;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigemptyset(&ignore.sa_mask);
  if (::sigaction(SIGPIPE, &ignore, nullptr) == 0) {
    util::log()->debug("SIGPIPE ignored: a write to a lost rank's socket is an error, not a silent exit");
  }
}

std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

// Length-prefixed strings, for handing a whole exchange's result to a rank that missed it.
std::string pack(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& part : parts) {
    const uint64_t size = part.size();
    out.append(reinterpret_cast<const char*>(&size), sizeof size);
    out += part;
  }
  return out;
}

std::vector<std::string> unpack(const std::string& packed) {
  std::vector<std::string> parts;
  size_t at = 0;
  while (at + sizeof(uint64_t) <= packed.size()) {
    uint64_t size = 0;
    std::memcpy(&size, packed.data() + at, sizeof size);
    at += sizeof size;
    if (size > packed.size() - at) break;
    parts.push_back(packed.substr(at, size));
    at += size;
  }
  if (at != packed.size()) throw CoordinationError("a malformed exchange result from another rank");
  return parts;
}

std::string seconds_text(std::chrono::milliseconds t) { return std::to_string(t.count() / 1000) + " s"; }

const char* channel_name(Channel channel) {
  switch (channel) {
    case Channel::kTraining: return "training";
    case Channel::kWriter: return "writer";
    case Channel::kReplica: return "replica";
  }
  return "unknown";
}

// Starts every operation, then waits for them all, so that two ranks sending to each other cannot deadlock.
void run_all(const std::vector<std::function<c10::intrusive_ptr<c10d::Work>()>>& starts,
             std::chrono::milliseconds timeout) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& start : starts) works.push_back(start());
  for (auto& work : works) work->wait(timeout);
}

}  // namespace

struct C10dCoordinator::Group {
  std::string name;                       // "training" | "writer"
  c10::intrusive_ptr<c10d::Store> store;  // a connection of its own, keys under autosnap/<name>/
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  int64_t generation = 0;
  std::string broken;                    // why pg must be formed again
  int64_t sequence = 0;                  // exchanges begun on this channel
  int64_t done = 0;                      // the last one completed here
  std::vector<std::string> done_result;  // and its result

  // One collective; a failure breaks the group (formed again by the next exchange).
  void run(const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
    try {
      start()->wait();
    } catch (const std::exception& e) {
      broken = message_of(e);
      throw;
    }
  }

  // The store's generation counter, moved from `from` to from + 1 unless a
  // rank already moved it; returns where it is now.
  int64_t advance(int64_t from) {
    const auto now =
        store->compareSet("generation", from == 0 ? std::vector<uint8_t>{} : bytes_of(std::to_string(from)),
                          bytes_of(std::to_string(from + 1)));
    return std::stoll(std::string(now.begin(), now.end()));
  }

  std::vector<at::Tensor> allgather(const at::Tensor& mine, int world) {
    std::vector<at::Tensor> input{mine};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < world; ++r) output[0].push_back(at::empty_like(mine));
    run([&] { return pg->allgather(output, input); });
    return output[0];
  }

  std::string broadcast_from(int root, const std::string& value, int rank) {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    std::vector<at::Tensor> size{at::full({1}, static_cast<int64_t>(value.size()), at::kLong)};
    run([&] { return pg->broadcast(size, options); });
    std::vector<at::Tensor> data{at::empty({std::max<int64_t>(size[0].item<int64_t>(), 1)}, at::kByte)};
    if (rank == root) std::memcpy(data[0].data_ptr(), value.data(), value.size());
    run([&] { return pg->broadcast(data, options); });
    return std::string(static_cast<const char*>(data[0].data_ptr()),
                       static_cast<size_t>(size[0].item<int64_t>()));
  }
};

C10dCoordinator::C10dCoordinator(const RankInfo& info, const Options& options)
    : rank_(info.rank), world_size_(info.world_size), timeout_(options.timeout) {
  const std::string where_am_i = "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) +
                                 " (" + info.source + ", MASTER_ADDR " + info.master_addr + ")";
  keep_broken_connections_from_killing_the_process();
  try {
    store_ = std::make_unique<JobStore>(info, options);
    device_ = choose_gloo_device(info.master_addr, info.nodes == 1);
    for (Channel channel : {Channel::kTraining, Channel::kWriter, Channel::kReplica}) {
      auto group = std::make_unique<Group>();
      group->name = channel_name(channel);
      group->store = store_->connect("autosnap/" + group->name + "/");
      form(*group);
      groups_[static_cast<int>(channel)] = std::move(group);
    }
    // Who runs where, for messages ("rank 1 on node2"), and which ranks share a node.
    const std::string node_key = host_name() + "#" + std::to_string(info.node_rank);
    std::vector<std::string> keys;
    for (const auto& key : exchange(node_key, Channel::kTraining)) {
      hosts_.push_back(key.substr(0, key.rfind('#')));
      const auto known = std::find(keys.begin(), keys.end(), key);
      nodes_.push_back(static_cast<int>(known - keys.begin()));
      if (known == keys.end()) keys.push_back(key);
    }
    if (std::all_of(hosts_.begin(), hosts_.end(),
                    [&](const std::string& h) { return h == hosts_.front(); })) {
      hosts_.assign(hosts_.size(), "");  // one host: "rank 1" says it all
    }
    lifeline_ = std::make_unique<Lifeline>(rank_, world_size_, device_.address, hosts_, timeout_,
                                           *group(Channel::kTraining).store);
  } catch (const CoordinationError& e) {
    throw CoordinationError(where_am_i + ": " + e.what());
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw CoordinationError(
        where_am_i + ": cannot form autosnap's coordination groups within " + seconds_text(timeout_) +
        " (distributed.timeout_seconds) over " + (store_ ? store_->describe() : std::string("its store")) +
        (device_.address.empty() ? "" : ", Gloo on " + device_.address + " (" + device_.how + ")") + ": " +
        message_of(e));
  }
}

C10dCoordinator::~C10dCoordinator() {
  lifeline_.reset();  // its goodbye (after leave(true)) first: the others must not count this rank as lost
  for (auto& group : groups_) group.reset();
  store_.reset();  // rank 0's server last
}

std::string C10dCoordinator::describe() const {
  return "Gloo on " + device_.address + " (" + device_.how + "), " + store_->describe();
}

C10dCoordinator::Group& C10dCoordinator::group(Channel channel) {
  return *groups_[static_cast<int>(channel)];
}

std::string C10dCoordinator::where(int rank) const {
  const bool named =
      rank >= 0 && static_cast<size_t>(rank) < hosts_.size() && !hosts_[static_cast<size_t>(rank)].empty();
  return "rank " + std::to_string(rank) + (named ? " on " + hosts_[static_cast<size_t>(rank)] : "");
}

std::string C10dCoordinator::lost() const { return lifeline_ ? lifeline_->lost() : ""; }

std::string C10dCoordinator::lost_after_a_moment() const {
  return lifeline_ ? lifeline_->lost_after_settling() : "";
}

void C10dCoordinator::on_lost(std::function<void(const std::string&)> handler) {
  if (lifeline_) lifeline_->on_lost(std::move(handler));
}

void C10dCoordinator::leave(bool cleanly) {
  if (lifeline_) lifeline_->leave(cleanly);
}

void C10dCoordinator::form(Group& group) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
  options->devices.push_back(device_.device);
  options->threads = 1;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("g" + std::to_string(group.generation), group.store);
  group.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank_, world_size_, options);
  group.broken.clear();
}

std::vector<std::string> C10dCoordinator::send_receive(
    const std::vector<std::pair<int, std::string_view>>& sends, const std::vector<int>& receive_from,
    Channel channel) {
  Group& g = group(channel);
  const std::string what = where(rank_) + ": a transfer on the " + g.name + " coordination group failed";
  if (!g.broken.empty()) throw CoordinationError(what + " earlier (" + g.broken + ")");
  using Tensors = std::vector<at::Tensor>;
  std::vector<Tensors> sizes_out, sizes_in, data_out, data_in;
  std::vector<std::string> received(receive_from.size());
  try {
    // Sizes first (tag 0), then the bytes (tag 1), each round all at once.
    // The ops refer to the tensors: no vector may reallocate once they are made.
    sizes_out.reserve(sends.size());
    sizes_in.reserve(receive_from.size());
    data_out.reserve(sends.size());
    data_in.reserve(receive_from.size());
    std::vector<std::function<c10::intrusive_ptr<c10d::Work>()>> ops;
    for (const auto& [peer, bytes] : sends) {
      sizes_out.push_back({at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong)});
      ops.push_back([&g, &t = sizes_out.back(), peer = peer] { return g.pg->send(t, peer, 0); });
    }
    for (int peer : receive_from) {
      sizes_in.push_back({at::zeros({1}, at::kLong)});
      ops.push_back([&g, &t = sizes_in.back(), peer] { return g.pg->recv(t, peer, 0); });
    }
    run_all(ops, timeout_);
    ops.clear();
    for (const auto& [peer, bytes] : sends) {
      if (bytes.empty()) continue;
      // The message's own bytes, not a copy: it outlives the send.
      data_out.push_back(
          {at::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())}, at::kByte)});
      ops.push_back([&g, &t = data_out.back(), peer = peer] { return g.pg->send(t, peer, 1); });
    }
    for (size_t i = 0; i < receive_from.size(); ++i) {
      const int64_t size = sizes_in[i][0].item<int64_t>();
      received[i].resize(static_cast<size_t>(size));
      if (size == 0) continue;
      data_in.push_back({at::from_blob(received[i].data(), {size}, at::kByte)});
      ops.push_back([&g, &t = data_in.back(), peer = receive_from[i]] { return g.pg->recv(t, peer, 1); });
    }
    run_all(ops, timeout_);
  } catch (const std::exception& e) {
    g.broken = message_of(e);
    const std::string gone = lost_after_a_moment();
    throw CoordinationError(what + " (" + g.broken + ")" + (gone.empty() ? "" : "; " + gone));
  }
  return received;
}

void C10dCoordinator::form_again(Group& group) {
  const std::string why = group.broken;
  const std::string what = where(rank_) + ": the " + group.name + " coordination group failed (" + why + ")";
  // A dead peer resets the connections at once; the lifeline says within a moment whether that was a death.
  if (const std::string gone = lost_after_a_moment(); !gone.empty())
    throw CoordinationError(what + "; " + gone);
  const auto start = Clock::now();
  group.pg.reset();  // closes its connections: a rank still waiting in it fails at once and comes here too
  try {
    group.generation = group.advance(group.generation);
    util::log()->warn("{}; forming it again (generation {})", what, group.generation);
    form(group);
  } catch (const std::exception& e) {
    try {
      group.generation =
          group.advance(group.generation);  // a rank that comes later must not wait in this one
    } catch (const std::exception&) {
      // The store is gone too: the error below says what failed first.
    }
    const std::string gone = lost();
    throw CoordinationError(what + " and could not be formed again within " + seconds_text(timeout_) +
                            " (distributed.timeout_seconds): " + (gone.empty() ? message_of(e) : gone));
  }
  util::log()->info("{}: the {} coordination group is formed again (generation {}) in {:.2f} s", where(rank_),
                    group.name, group.generation,
                    std::chrono::duration<double>(Clock::now() - start).count());
}

std::vector<std::string> C10dCoordinator::exchange(const std::string& mine, Channel channel) {
  Group& g = group(channel);
  const int64_t sequence = ++g.sequence;
  for (int formed = 0;; ++formed) {
    if (!g.broken.empty()) {
      if (formed > kMaxFormings) {
        throw CoordinationError(where(rank_) + ": the " + g.name + " coordination group kept failing (" +
                                g.broken + "), formed again " + std::to_string(kMaxFormings) +
                                " times for one exchange");
      }
      form_again(g);
    }
    try {
      if (auto result = exchange_once(g, sequence, mine)) return *result;
      // Another rank was behind and has caught up or given its exchange up: do this one again.
    } catch (const CoordinationError&) {
      throw;
    } catch (const std::exception& e) {
      if (g.broken.empty()) g.broken = message_of(e);
      if (const std::string gone = lost(); !gone.empty()) {
        throw CoordinationError(where(rank_) + ": an exchange on the " + g.name +
                                " coordination group failed (" + g.broken + "); " + gone);
      }
    }
  }
}

// One try. nullopt: this rank is ahead of another (which got what it missed); try again.
std::optional<std::vector<std::string>> C10dCoordinator::exchange_once(Group& g, int64_t sequence,
                                                                       const std::string& mine) {
  at::Tensor header = at::zeros({kHeaderWords}, at::kLong);
  auto* words = header.data_ptr<int64_t>();
  words[kSequence] = sequence;
  words[kDone] = g.done;
  words[kSize] = static_cast<int64_t>(mine.size());
  std::memcpy(words + kInline, mine.data(), std::min(mine.size(), kInlineBytes));
  const auto headers = g.allgather(header, world_size_);

  int64_t lowest = sequence, highest = sequence;
  for (const auto& h : headers) {
    lowest = std::min(lowest, h.data_ptr<int64_t>()[kSequence]);
    highest = std::max(highest, h.data_ptr<int64_t>()[kSequence]);
  }
  if (lowest != highest) {
    // Right after the group was formed again some ranks are further along.
    // Those at `lowest` either take that exchange's result from a rank that
    // completed it (the others failed in it), or, when every rank further
    // along gave it up, fail it too; everyone else does theirs again.
    int holder = -1;
    for (int r = 0; r < world_size_ && holder < 0; ++r) {
      const auto* w = headers[static_cast<size_t>(r)].data_ptr<int64_t>();
      if (w[kSequence] > lowest && w[kDone] == lowest) holder = r;
    }
    std::vector<std::string> result;
    if (holder >= 0)
      result = unpack(g.broadcast_from(holder, rank_ == holder ? pack(g.done_result) : "", rank_));
    if (sequence != lowest) return std::nullopt;
    if (holder < 0) {
      throw CoordinationError(
          where(rank_) + ": an exchange on the " + g.name +
          " coordination group was given up by the other ranks (they timed out waiting for "
          "this one)");
    }
    g.done = sequence;
    g.done_result = result;
    return result;
  }

  int64_t longest = 0;
  for (const auto& h : headers) longest = std::max(longest, h.data_ptr<int64_t>()[kSize]);
  std::vector<std::string> result;
  if (static_cast<size_t>(longest) <= kInlineBytes) {
    for (const auto& h : headers) {
      const auto* w = h.data_ptr<int64_t>();
      result.emplace_back(reinterpret_cast<const char*>(w + kInline), static_cast<size_t>(w[kSize]));
    }
  } else {
    at::Tensor padded = at::zeros({longest}, at::kByte);
    std::memcpy(padded.data_ptr(), mine.data(), mine.size());
    const auto all = g.allgather(padded, world_size_);
    for (int r = 0; r < world_size_; ++r) {
      result.emplace_back(static_cast<const char*>(all[static_cast<size_t>(r)].data_ptr()),
                          static_cast<size_t>(headers[static_cast<size_t>(r)].data_ptr<int64_t>()[kSize]));
    }
  }
  g.done = sequence;
  g.done_result = result;
  return result;
}

}  // namespace cluster
}  // namespace autosnap
