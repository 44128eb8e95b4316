#include "cluster/lifeline.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "autosnap/errors.h"
#include "cluster/c10d_message.h"
#include "util/log.h"

namespace autosnap {
namespace cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const std::string kAddressKey = "lifeline";

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1000));
}

[[noreturn]] void fail(const std::string& what) { throw CoordinationError(what); }

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void send_text(int fd, const std::string& text) {
  // Never blocks: a link that cannot take a few bytes is one we are about to call silent.
  ::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

// One line from `fd` before `deadline` (formation only).
std::string read_line(int fd, Clock::time_point deadline, const std::string& what) {
  std::string line;
  char c = 0;
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, poll_ms(deadline)) == 0) {
      if (Clock::now() >= deadline) fail(what + ": no answer before the timeout");
      continue;
    }
    const ssize_t n = ::recv(fd, &c, 1, 0);
    if (n == 0) fail(what + ": the connection closed");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail(what + ": " + std::strerror(errno));
    }
    if (c == '\n') return line;
    line += c;
    if (line.size() > 256) fail(what + ": not a lifeline");
  }
}

std::string ranks_phrase(const std::vector<int>& ranks) {
  if (ranks.size() == 1) return "rank " + std::to_string(ranks[0]) + " is";
  std::string out = "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) out += i + 1 == ranks.size() ? " and " : ", ";
    out += std::to_string(ranks[i]);
  }
  return out + " are";
}

}  // namespace

Lifeline::Lifeline(int rank, int world, const std::string& address, std::vector<std::string> hosts,
                   milliseconds timeout, c10d::Store& store)
    : rank_(rank),
      world_(world),
      hosts_(std::move(hosts)),
      timeout_(timeout),
      interval_(std::clamp(timeout / 20, milliseconds(50), milliseconds(1000))),
      gather_(std::min(interval_ + milliseconds(50), milliseconds(300))) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  try {
    if (rank_ == 0) {
      form_as_rank0(address, store);
    } else {
      form_as_peer(store);
    }
  } catch (...) {
    for (auto& link : links_) ::close(link.fd);
    ::close(wake_fd_);
    throw;
  }
  const auto now = Clock::now();
  for (auto& link : links_) {
    link.heard = now;
    set_nonblocking(link.fd);
  }
  thread_ = std::thread([this] { run(); });
}

Lifeline::~Lifeline() {
  stop_ = true;
  const uint64_t one = 1;
  if (::write(wake_fd_, &one, sizeof one) < 0) {
    // The thread still ends within one interval.
  }
  if (thread_.joinable()) thread_.join();
  bool cleanly = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cleanly = leaving_cleanly_;
  }
  for (auto& link : links_) {
    if (cleanly && !link.closed) send_text(link.fd, "bye\n");
    ::close(link.fd);
  }
  ::close(wake_fd_);
}

void Lifeline::form_as_rank0(const std::string& address, c10d::Store& store) {
  const auto deadline = Clock::now() + timeout_;
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in bound{};
  bound.sin_family = AF_INET;
  socklen_t length = sizeof bound;
  if (listener < 0 || ::inet_pton(AF_INET, address.c_str(), &bound.sin_addr) != 1 ||
      ::bind(listener, reinterpret_cast<sockaddr*>(&bound), sizeof bound) != 0 || ::listen(listener, world_) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    const std::string why = std::strerror(errno);
    if (listener >= 0) ::close(listener);
    fail("rank 0: cannot listen for the other ranks' lifelines on " + address + ": " + why);
  }
  const std::string published = address + ":" + std::to_string(ntohs(bound.sin_port));
  store.set(kAddressKey, std::vector<uint8_t>(published.begin(), published.end()));
  try {
    std::vector<bool> joined(static_cast<size_t>(world_), false);
    for (int joins = 1; joins < world_;) {
      pollfd p{listener, POLLIN, 0};
      if (::poll(&p, 1, poll_ms(deadline)) <= 0) {
        if (Clock::now() < deadline) continue;
        std::string missing;
        for (int r = 1; r < world_; ++r)
          if (!joined[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        fail("rank 0: rank(s) " + missing + " did not connect their lifeline within the timeout");
      }
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      Link link;
      link.fd = fd;
      const std::string hello = read_line(fd, deadline, "rank 0: a lifeline being formed");
      int peer = -1;
      if (std::sscanf(hello.c_str(), "hello %d", &peer) != 1 || peer <= 0 || peer >= world_ ||
          joined[static_cast<size_t>(peer)]) {
        ::close(fd);
        continue;  // not one of ours (or a duplicate): ignore it
      }
      joined[static_cast<size_t>(peer)] = true;
      link.rank = peer;
      links_.push_back(link);
      ++joins;
    }
  } catch (...) {
    ::close(listener);
    throw;
  }
  ::close(listener);
}

void Lifeline::form_as_peer(c10d::Store& store) {
  const auto deadline = Clock::now() + timeout_;
  std::string published;
  try {
    store.wait({kAddressKey}, timeout_);
    const auto bytes = store.get(kAddressKey);
    published.assign(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    fail(where(rank_) + ": rank 0 did not publish its lifeline: " + message_of(e));
  }
  const size_t colon = published.rfind(':');
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_port = htons(static_cast<uint16_t>(std::atoi(published.c_str() + colon + 1)));
  if (colon == std::string::npos || ::inet_pton(AF_INET, published.substr(0, colon).c_str(), &peer.sin_addr) != 1)
    fail(where(rank_) + ": rank 0 published a malformed lifeline address '" + published + "'");
  Link link;
  link.rank = 0;
  link.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int rc = ::connect(link.fd, reinterpret_cast<sockaddr*>(&peer), sizeof peer);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{link.fd, POLLOUT, 0};
    while ((rc = ::poll(&p, 1, poll_ms(deadline))) == 0 && Clock::now() < deadline) {
    }
    int error = rc > 0 ? 0 : ETIMEDOUT;
    socklen_t size = sizeof error;
    if (rc > 0) ::getsockopt(link.fd, SOL_SOCKET, SO_ERROR, &error, &size);
    rc = error == 0 ? 0 : -1;
    errno = error;
  }
  if (rc != 0) {
    const std::string why = std::strerror(errno);
    ::close(link.fd);
    fail(where(rank_) + ": cannot connect its lifeline to rank 0 at " + published + ": " + why);
  }
  const int flags = ::fcntl(link.fd, F_GETFL);
  ::fcntl(link.fd, F_SETFL, flags & ~O_NONBLOCK);
  const std::string hello = "hello " + std::to_string(rank_) + "\n";
  if (::send(link.fd, hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
    ::close(link.fd);
    fail(where(rank_) + ": cannot greet rank 0 on its lifeline");
  }
  links_.push_back(link);
}

std::string Lifeline::where(int rank) const {
  const std::string& host = hosts_.empty() ? std::string() : hosts_[static_cast<size_t>(rank)];
  return "rank " + std::to_string(rank) + (host.empty() ? "" : " on " + host);
}

std::string Lifeline::lost() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lost_;
}

std::string Lifeline::lost_after_settling() const {
  const auto until = Clock::now() + interval_ + gather_ + milliseconds(100);
  std::string why;
  while ((why = lost()).empty() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
  return why;
}

void Lifeline::on_lost(std::function<void(const std::string&)> handler) {
  std::lock_guard<std::mutex> calling(handler_mutex_);
  handler_ = std::move(handler);
  const std::string already = lost();
  if (!already.empty() && handler_ && !handled_) {
    handled_ = true;
    handler_(already);
  }
}

void Lifeline::leave(bool cleanly) {
  std::lock_guard<std::mutex> lock(mutex_);
  leaving_cleanly_ = cleanly;
}

void Lifeline::read_from(Link& link, Clock::time_point now) {
  char buffer[512];
  while (true) {
    const ssize_t n = ::recv(link.fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      link.heard = now;
      link.unread.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    link.closed = true;  // 0: closed by the peer; < 0: reset
    break;
  }
  size_t newline;
  while ((newline = link.unread.find('\n')) != std::string::npos) {
    const std::string line = link.unread.substr(0, newline);
    link.unread.erase(0, newline + 1);
    if (line == "bye") link.departed = true;
    if (line.rfind("lost ", 0) == 0 && rank_ != 0) announce(line.substr(5));  // rank 0's words
  }
  if (link.closed && !link.departed)
    suspect(link.rank, "the connection closed without a goodbye (a process died, or its node went down)");
}

void Lifeline::suspect(int rank, const std::string& why) {
  if (rank_ != 0) {
    announce(where(0) + " is lost: " + why);
    return;
  }
  for (const auto& s : suspects_)
    if (s.first == rank) return;
  if (suspects_.empty()) first_suspected_ = Clock::now();
  suspects_.emplace_back(rank, why);
}

// "ranks 2 and 3 on node2 are lost: ..." — grouped by host and reason.
std::string Lifeline::describe_suspects() const {
  std::map<std::pair<std::string, std::string>, std::vector<int>> groups;
  for (const auto& [rank, why] : suspects_)
    groups[{hosts_.empty() ? "" : hosts_[static_cast<size_t>(rank)], why}].push_back(rank);
  std::string out;
  for (auto& [key, ranks] : groups) {
    std::sort(ranks.begin(), ranks.end());
    std::string phrase = ranks_phrase(ranks);
    if (!key.first.empty()) phrase.insert(phrase.rfind(' '), " on " + key.first);
    out += (out.empty() ? "" : "; ") + phrase + " lost: " + key.second;
  }
  return out;
}

void Lifeline::announce(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!lost_.empty()) return;
    lost_ = why;
  }
  if (rank_ == 0) {
    for (auto& link : links_)
      if (!link.closed) send_text(link.fd, "lost " + why + "\n");
  }
  std::lock_guard<std::mutex> calling(handler_mutex_);
  if (!handler_ || handled_) return;
  handled_ = true;
  try {
    handler_(why);
  } catch (const std::exception& e) {
    util::log()->error("while reporting a lost rank: {}", e.what());
  }
}

void Lifeline::run() {
  auto next_beat = Clock::now();
  const std::string silent = "nothing heard for over " + std::to_string(timeout_.count() / 1000) +
                             " s (distributed.timeout_seconds): a hung process, a cut link or a lost node";
  while (!stop_) {
    std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
    for (const auto& link : links_) fds.push_back({link.closed ? -1 : link.fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), static_cast<int>(interval_.count()));
    if (stop_) break;
    const auto now = Clock::now();
    for (size_t i = 0; i < links_.size(); ++i) {
      if (fds[i + 1].revents != 0) read_from(links_[i], now);
    }
    if (now >= next_beat) {
      for (auto& link : links_)
        if (!link.closed) send_text(link.fd, "h\n");
      next_beat = now + interval_;
    }
    if (!lost().empty()) continue;  // said once; the heartbeats go on for the ranks still here
    for (auto& link : links_) {
      if (!link.closed && !link.departed && now - link.heard > timeout_) suspect(link.rank, silent);
    }
    // Ranks of one node go together: gather them for a moment, then say it once.
    if (!suspects_.empty() && now - first_suspected_ >= gather_) {
      announce(describe_suspects());
      suspects_.clear();
    }
  }
}

}  // namespace cluster
}  // namespace autosnap
