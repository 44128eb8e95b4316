// libFuzzer target: the control socket. Each input is sent as-is to a live
// ControlServer (framing, size cap, JSON parsing, dispatch), then the reply
// is read until the server closes the connection.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "daemon/control_server.h"

namespace {

struct Server {
  Server() : path("/tmp/autosnap-fuzz-" + std::to_string(::getpid()) + ".sock"), work(io.get_executor()) {
    autosnap::daemon::ControlTarget target;
    target.status = [] { return nlohmann::json{{"ok", true}, {"step", 1}}; };
    target.snapshot = [](const std::string& reason, autosnap::daemon::ControlReply reply) {
      reply({{"ok", true}, {"step", 1}, {"path", reason}});
    };
    server = std::make_unique<autosnap::daemon::ControlServer>(io, path, std::move(target));
    thread = std::thread([this] { io.run(); });
  }
  std::string path;
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work;
  std::unique_ptr<autosnap::daemon::ControlServer> server;
  std::thread thread;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Server* server = new Server();  // lives for the whole fuzzing run
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, server->path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) __builtin_trap();
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::send(fd, data, size, MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  char buffer[4096];
  while (true) {
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;  // the server closed: done
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) __builtin_trap();  // the server hung
      break;                                                          // reset by the server
    }
  }
  ::close(fd);
  return 0;
}
