#include "cluster/job_store.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "autosnap/errors.h"
#include "cluster/c10d_message.h"
#include "autosnap/fs.h"
#include "fs/atomic_file.h"
#include "fs/unique_suffix.h"

namespace autosnap {
namespace cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

const std::string kNonceKey = "autosnap/nonce";  // tells rank 0's store from any other at a reused port

std::string host_name() {
  char name[256] = {0};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "unknown host";
}

std::string seconds_text(milliseconds t) { return std::to_string(t.count() / 1000) + " s"; }

std::string to_text(const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }

// Whether something listens at host:port, asked with a plain TCP connect: a
// stale file names a port nobody listens on any more, and c10d's own client
// would retry that (and log) until its timeout.
bool listens(const std::string& host, int port, milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return false;
  bool open = false;
  for (addrinfo* a = found; a != nullptr && !open; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      open = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t size = sizeof error;
      open = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
             ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return open;
}

}  // namespace

std::string JobStore::published_path(const std::string& directory) {
  return join_path(directory, "coordinator.json");
}

JobStore::JobStore(const RankInfo& info, const Options& options)
    : timeout_(options.timeout), host_(info.master_addr) {
  if (options.lent) {
    if (auto* tcp = dynamic_cast<c10d::TCPStore*>(options.lent.get())) {
      host_ = tcp->getHost();
      port_ = tcp->getPort();
      description_ = "the job's TCPStore at " + host_ + ":" + std::to_string(port_);
    } else {
      lent_ = options.lent;
      description_ = "the job's store";
    }
    return;
  }
  if (info.rank == 0) {
    serve(info, options);
  } else if (options.port != 0) {
    port_ = options.port;
    description_ = "rank 0's TCPStore at " + host_ + ":" + std::to_string(port_) + " (distributed.port)";
  } else {
    find_published(info, options);
  }
}

JobStore::~JobStore() {
  if (published_.empty()) return;
  try {
    default_file_system().remove_file(published_);
  } catch (const std::exception&) {
    // Only a hint for this launch's ranks; the next launch replaces it.
  }
}

void JobStore::serve(const RankInfo& info, const Options& options) {
  c10d::TCPStoreOptions server;
  server.port = static_cast<std::uint16_t>(options.port);
  server.isServer = true;
  server.waitWorkers = false;
  server.timeout = timeout_;
  try {
    server_ = c10::make_intrusive<c10d::TCPStore>(host_, server);
  } catch (const std::exception& e) {
    throw CoordinationError("rank 0: cannot serve autosnap's coordination store at " + host_ + ":" +
                            std::to_string(options.port) +
                            (options.port == 0 ? "" : " (distributed.port; 0 lets the kernel pick a free port)") +
                            ": " + message_of(e));
  }
  port_ = server_->getPort();
  description_ = "rank 0's TCPStore at " + host_ + ":" + std::to_string(port_);
  if (options.port != 0) return;
  // Publish the port the kernel picked, with what tells this launch's ranks it is theirs.
  const std::string nonce = unique_suffix();
  server_->set(kNonceKey, std::vector<uint8_t>(nonce.begin(), nonce.end()));
  const std::string text = nlohmann::json{{"port", port_},
                                          {"launch", info.launch},
                                          {"nonce", nonce},
                                          {"host", host_name()},
                                          {"pid", static_cast<int>(::getpid())}}
                               .dump() +
                           "\n";
  published_ = published_path(options.directory);
  create_directories(default_file_system(), options.directory);  // rank 0 makes it, as its store would
  write_file_atomically(
      default_file_system(), published_, [&](WritableFile& f) { f.append(text.data(), text.size()); },
      /*durable=*/false);
  description_ += " (published in " + published_ + ")";
}

// Waits for rank 0's file of this launch, then for its store to answer.
void JobStore::find_published(const RankInfo& info, const Options& options) {
  const std::string path = published_path(options.directory);
  const auto deadline = Clock::now() + timeout_;
  std::string problem = "there is no such file";
  while (true) {
    try {
      const auto published = nlohmann::json::parse(default_file_system().read_small_file(path, 1 << 16));
      const std::string launch = published.at("launch").get<std::string>();
      if (launch != info.launch) {
        problem = "it names another launch (" + launch + "; this one: " + info.launch + ")";
      } else {
        port_ = published.at("port").get<int>();
        if (!listens(host_, port_, milliseconds(500)))
          throw std::runtime_error("nothing listens there (a file of an earlier launch?)");
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        auto client = open_client(std::clamp(left, milliseconds(100), milliseconds(2000)));
        const std::string nonce = published.at("nonce").get<std::string>();
        if (client->check({kNonceKey}) && to_text(client->get(kNonceKey)) == nonce) {
          description_ = "rank 0's TCPStore at " + host_ + ":" + std::to_string(port_) + " (found in " + path + ")";
          return;
        }
        problem = "port " + std::to_string(port_) + " of " + host_ + " answers, but not as this launch's store";
      }
    } catch (const IoError& e) {
      problem = e.error_number() == ENOENT ? "there is no such file" : e.what();
    } catch (const nlohmann::json::exception& e) {
      problem = std::string("it is malformed: ") + e.what();
    } catch (const std::exception& e) {
      problem = "its port " + std::to_string(port_) + " of " + host_ + " does not answer: " + message_of(e);
    }
    if (Clock::now() >= deadline) {
      throw CoordinationError(
          "rank " + std::to_string(info.rank) + " on " + host_name() + ": found no coordination store of rank 0 " +
          "within " + seconds_text(timeout_) + " (distributed.timeout_seconds): rank 0 publishes its port in " +
          path + ", and " + problem +
          "; rank 0 may not have started, or the snapshot directory is not on a file system shared by every node");
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

c10::intrusive_ptr<c10d::Store> JobStore::open_client(milliseconds connect_timeout) {
  c10d::TCPStoreOptions client;
  client.port = static_cast<std::uint16_t>(port_);
  client.isServer = false;
  client.waitWorkers = false;
  client.timeout = connect_timeout;
  auto store = c10::make_intrusive<c10d::TCPStore>(host_, client);
  store->setTimeout(timeout_);
  return store;
}

c10::intrusive_ptr<c10d::Store> JobStore::connect(const std::string& prefix) {
  c10::intrusive_ptr<c10d::Store> base = lent_;
  if (!base) {
    try {
      base = open_client(timeout_);
    } catch (const std::exception& e) {
      throw CoordinationError("cannot reach " + description_ + " within " + seconds_text(timeout_) +
                              " (distributed.timeout_seconds): " + message_of(e));
    }
  }
  return c10::make_intrusive<c10d::PrefixStore>(prefix, base);
}

}  // namespace cluster
}  // namespace autosnap
