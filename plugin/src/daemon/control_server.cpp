#include "daemon/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <istream>

#include "autosnap/errors.h"
#include "daemon/control_protocol.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using util::log;

using boost::asio::local::stream_protocol;
using nlohmann::json;

class ControlServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ControlServer& server, stream_protocol::socket socket)
      : server_(server),
        socket_(std::move(socket)),
        strand_(boost::asio::make_strand(server.io_)),
        buffer_(control::kMaxRequestBytes + 1),
        timer_(strand_) {}

  void start() {
    ucred peer{};
    socklen_t length = sizeof(peer);
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
      close();
      return;
    }
    const uid_t owner = ::geteuid();
    if (peer.uid != owner && peer.uid != 0) {
      log()->warn(
          "refused a control connection from uid {} (pid {}): only uid {} (or root) may control this job",
          peer.uid, peer.pid, owner);
      send({{"ok", false},
            {"error", "permission denied: uid " + std::to_string(peer.uid) +
                          " may not control this job (owner uid " + std::to_string(owner) + ")"}},
           /*then_close=*/true);
      return;
    }
    read();
  }

  void close() {
    boost::asio::post(strand_, [self = shared_from_this()] {
      boost::system::error_code ignored;
      self->timer_.cancel();
      self->socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
      self->socket_.close(ignored);
    });
  }

 private:
  void read() {
    arm_idle_timer();
    boost::asio::async_read_until(
        socket_, buffer_, '\n',
        boost::asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code error,
                                                                        size_t size) {
          self->timer_.cancel();
          if (error == boost::asio::error::not_found) {
            self->send(
                {{"ok", false},
                 {"error", "request longer than " + std::to_string(control::kMaxRequestBytes) + " bytes"}},
                /*then_close=*/true);
            return;
          }
          if (error) {
            self->finish();
            return;
          }
          std::string line(
              boost::asio::buffers_begin(self->buffer_.data()),
              boost::asio::buffers_begin(self->buffer_.data()) + static_cast<std::ptrdiff_t>(size));
          self->buffer_.consume(size);
          self->handle(line);
        }));
  }

  void handle(const std::string& line) {
    json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (request.is_discarded() || !request.is_object() || !request.contains("cmd") ||
        !request["cmd"].is_string()) {
      send({{"ok", false},
            {"error", "malformed request: expected one JSON object per line with a string \"cmd\""}},
           false);
      return;
    }
    std::weak_ptr<Session> weak = shared_from_this();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    dispatch_control_request(request, server_.target_, [weak, answered](const json& reply) {
      if (answered->exchange(true)) return;
      if (auto self = weak.lock()) {
        boost::asio::post(self->strand_, [self, reply] { self->send(reply, false); });
      }
    });
  }

  void send(const json& reply, bool then_close) {
    auto text = std::make_shared<std::string>(reply.dump() + "\n");
    boost::asio::async_write(
        socket_, boost::asio::buffer(*text),
        boost::asio::bind_executor(
            strand_, [self = shared_from_this(), text, then_close](boost::system::error_code error, size_t) {
              if (error || then_close) {
                self->finish();
                return;
              }
              self->read();
            }));
  }

  // A client that sends nothing for a while is dropped.
  void arm_idle_timer() {
    timer_.expires_after(std::chrono::seconds(control::kIdleTimeoutSeconds));
    timer_.async_wait([self = shared_from_this()](boost::system::error_code error) {
      if (!error) {
        boost::system::error_code ignored;
        self->socket_.close(ignored);
      }
    });
  }

  void finish() {
    boost::system::error_code ignored;
    timer_.cancel();
    socket_.close(ignored);
    server_.forget(this);
  }

  ControlServer& server_;
  stream_protocol::socket socket_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::streambuf buffer_;
  boost::asio::steady_timer timer_;
};

namespace {

uint64_t inode_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// A socket file from an earlier process: replace it if nobody listens, refuse if someone does.
void clear_stale_socket(boost::asio::io_context& io, const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode)) {
    throw Error("cannot serve the control socket at '" + path +
                "': a file that is not a socket is in the way");
  }
  stream_protocol::socket probe(io);
  boost::system::error_code error;
  probe.connect(stream_protocol::endpoint(path), error);
  if (!error) {
    ucred peer{};
    socklen_t length = sizeof(peer);
    ::getsockopt(probe.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &length);
    throw Error("the control socket '" + path + "' is served by another running process (pid " +
                std::to_string(peer.pid) + "); stop it or set control.socket_path");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw IoError("remove stale control socket", path, errno);
  log()->info("replaced a stale control socket left by a dead process: {}", path);
}

}  // namespace

void dispatch_control_request(const json& request, const ControlTarget& target, ControlReply reply) {
  const std::string command = request["cmd"].get<std::string>();
  if (command == "ping") {
    reply({{"ok", true}, {"pid", static_cast<int>(::getpid())}});
  } else if (command == "status") {
    reply(target.status());
  } else if (command == "snapshot") {
    std::string reason = "manual";
    if (request.contains("reason")) {
      if (!request["reason"].is_string() || request["reason"].get<std::string>().size() > 200) {
        reply({{"ok", false}, {"error", "\"reason\" must be a string of at most 200 characters"}});
        return;
      }
      reason = request["reason"].get<std::string>();
    }
    target.snapshot(reason, std::move(reply));
  } else {
    reply({{"ok", false}, {"error", "unknown command '" + command + "'; expected ping, status or snapshot"}});
  }
}

ControlServer::ControlServer(boost::asio::io_context& io, std::string path, ControlTarget target)
    : io_(io), path_(std::move(path)), target_(std::move(target)), acceptor_(io) {
  if (path_.size() >= sizeof(sockaddr_un::sun_path)) {
    throw IoError("serve control socket", path_,
                  "the path is longer than " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                      " bytes; set control.socket_path to a shorter one");
  }
  clear_stale_socket(io, path_);
  const stream_protocol::endpoint endpoint(path_);
  acceptor_.open(endpoint.protocol());
  acceptor_.bind(endpoint);
  // Only the owner may connect; the peer uid is checked again on every connection.
  if (::chmod(path_.c_str(), 0600) != 0) throw IoError("chmod", path_, errno);
  acceptor_.listen();
  inode_ = inode_of(path_);
  accept();
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::accept() {
  acceptor_.async_accept([this](boost::system::error_code error, stream_protocol::socket socket) {
    if (error) return;  // stopped
    std::shared_ptr<Session> session;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopped_) return;
      if (sessions_.size() >= control::kMaxSessions) {
        // Say why before closing. The reply is tiny: a non-blocking write fits the fresh socket's buffer.
        const std::string busy =
            json{{"ok", false},
                 {"error", "too many control connections (" + std::to_string(control::kMaxSessions) +
                               "); try again later"}}
                .dump() +
            "\n";
        boost::system::error_code ignored;
        socket.non_blocking(true, ignored);
        boost::asio::write(socket, boost::asio::buffer(busy), ignored);
        socket.close(ignored);
      } else {
        session = std::make_shared<Session>(*this, std::move(socket));
        sessions_.insert(session);
      }
    }
    if (session) session->start();
    accept();
  });
}

void ControlServer::forget(Session* session) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->get() == session) {
      sessions_.erase(it);
      return;
    }
  }
}

void ControlServer::stop() {
  std::set<std::shared_ptr<Session>> sessions;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    sessions.swap(sessions_);
  }
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (const auto& session : sessions) session->close();
  if (inode_ != 0 && inode_of(path_) == inode_) ::unlink(path_.c_str());
}

}  // namespace daemon
}  // namespace autosnap
