#include "support/thread_job.h"

#include "autosnap/errors.h"

namespace autosnap {
namespace testing {

class ThreadJob::RankCoordinator final : public daemon::Coordinator {
 public:
  RankCoordinator(ThreadJob& job, int rank) : job_(job), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return job_.world_; }
  std::vector<std::string> exchange(const std::string& mine, daemon::Channel channel) override {
    return job_.exchange(rank_, channel, ++sequence_[static_cast<int>(channel)], mine);
  }
  std::string lost() const override {
    std::lock_guard<std::mutex> lock(job_.mutex_);
    return job_.lost_locked();
  }

 private:
  ThreadJob& job_;
  const int rank_;
  int64_t sequence_[3] = {0, 0, 0};
};

ThreadJob::ThreadJob(int world) : world_(world), dead_(static_cast<size_t>(world), false) {}

std::unique_ptr<daemon::Coordinator> ThreadJob::coordinator(int rank) {
  return std::make_unique<RankCoordinator>(*this, rank);
}

void ThreadJob::kill(int rank) {
  std::lock_guard<std::mutex> lock(mutex_);
  dead_[static_cast<size_t>(rank)] = true;
  changed_.notify_all();
}

std::string ThreadJob::lost_locked() const {
  for (int r = 0; r < world_; ++r)
    if (dead_[static_cast<size_t>(r)]) return "rank " + std::to_string(r) + " is lost: its process died";
  return "";
}

std::vector<std::string> ThreadJob::exchange(int rank, daemon::Channel channel, int64_t sequence,
                                             const std::string& mine) {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto key = std::make_pair(static_cast<int>(channel), sequence);
  Round& round = rounds_[key];
  round.messages.resize(static_cast<size_t>(world_));
  round.messages[static_cast<size_t>(rank)] = mine;
  changed_.notify_all();
  auto complete = [&] {
    for (const auto& m : round.messages)
      if (!m) return false;
    return true;
  };
  changed_.wait(lock, [&] { return complete() || !lost_locked().empty(); });
  if (!complete()) throw CoordinationError("rank " + std::to_string(rank) + ": " + lost_locked());
  std::vector<std::string> result;
  for (const auto& m : round.messages) result.push_back(*m);
  if (++round.read == world_) rounds_.erase(key);
  return result;
}

}  // namespace testing
}  // namespace autosnap
