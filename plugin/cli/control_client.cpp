#include "control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace autosnap {
namespace control {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
          .count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace

nlohmann::json send_request(const std::string& socket_path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout) {
  using Kind = ClientError::Kind;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    throw ClientError(Kind::kBroken, "control socket path '" + socket_path + "' is too long");
  }
  std::strcpy(address.sun_path, socket_path.c_str());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw ClientError(Kind::kBroken, std::string("socket() failed: ") + std::strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    if (error == ENOENT || error == ECONNREFUSED) {
      throw ClientError(Kind::kNotRunning,
                        "no running job: nothing serves the control socket '" + socket_path + "'");
    }
    if (error == EACCES || error == EPERM) {
      struct stat st {};
      std::string owner = ::stat(socket_path.c_str(), &st) == 0
                              ? " (it belongs to uid " + std::to_string(st.st_uid) + ")"
                              : "";
      throw ClientError(Kind::kRefused,
                        "refused: permission denied on the control socket '" + socket_path + "'" + owner);
    }
    throw ClientError(Kind::kBroken, "cannot connect to '" + socket_path + "': " + std::strerror(error));
  }
  const std::string line = request.dump() + "\n";
  for (size_t sent = 0; sent < line.size();) {
    ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    // The job may have answered (a refusal) and closed before reading: read that answer.
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    if (n < 0)
      throw ClientError(Kind::kBroken, std::string("cannot send the request: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[4096];
  while (reply.find('\n') == std::string::npos) {
    pollfd p{fd.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      throw ClientError(Kind::kTimedOut, "timed out after " +
                                             std::to_string(timeout.count() / 1000.0).substr(0, 5) +
                                             " s waiting for the job's reply");
    }
    ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ClientError(Kind::kBroken, "the job closed the connection without replying");
    reply.append(buffer, static_cast<size_t>(n));
    if (reply.size() > (1 << 20)) throw ClientError(Kind::kBroken, "the job's reply is implausibly long");
  }
  auto parsed = nlohmann::json::parse(reply.substr(0, reply.find('\n')), nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object())
    throw ClientError(Kind::kBroken, "the job sent a malformed reply");
  if (!parsed.value("ok", false)) {
    const std::string error = parsed.value("error", std::string("unknown error"));
    if (error.rfind("permission denied", 0) == 0)
      throw ClientError(Kind::kRefused, "refused by the job: " + error);
  }
  return parsed;
}

}  // namespace control
}  // namespace autosnap
