// Helpers of the net/ tests: free ports on 127.0.0.1, forked nodes that report
// back through pipes, bounded in time.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "net/communicator.h"
#include "test/fork_util.h"

namespace tether::net::testing {

// n distinct TCP ports free on 127.0.0.1 right now, probed below the kernel's
// ephemeral range (32768+) so that outgoing connections do not take them
// between the probe and the bind. All probe sockets stay open until n are found.
inline std::vector<int> free_ports(int n) {
  std::mt19937 rng(static_cast<unsigned>(::getpid()) * 7919u +
                   static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::vector<int> fds, ports;
  for (int attempt = 0; attempt < 2000 && static_cast<int>(ports.size()) < n; ++attempt) {
    const int port = 20000 + static_cast<int>(rng() % 12000);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      fds.push_back(fd);
      ports.push_back(port);
    } else {
      ::close(fd);
    }
  }
  for (int fd : fds) ::close(fd);
  if (static_cast<int>(ports.size()) != n) throw std::runtime_error("no free ports");
  return ports;
}

inline std::vector<PeerAddr> loopback_peers(const std::vector<int>& ports) {
  std::vector<PeerAddr> peers;
  for (size_t i = 0; i < ports.size(); ++i) peers.push_back({static_cast<int>(i), "127.0.0.1", ports[i]});
  return peers;
}

struct ChildResult {
  bool ok = false;    // exited with status 0 before the deadline
  int status = -1;    // raw waitpid status (-1: killed at the deadline)
  std::string out;    // what the child's function returned (or "EXC: what")
};

// Runs fn(i) in n forked children (i = 0..n-1); each returns a string sent
// back through a pipe. Children still running at timeout_ms are SIGKILLed.
// The caller must hold no threads that the children need (fork copies only
// the calling thread).
inline std::vector<ChildResult> run_children(int n, const std::function<std::string(int)>& fn,
                                             int timeout_ms) {
  std::vector<pid_t> pids(static_cast<size_t>(n), -1);
  std::vector<int> fds(static_cast<size_t>(n), -1);
  for (int i = 0; i < n; ++i) {  // i over the children
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {  // child: never returns into doctest
      tether::testing::reset_crash_signals_in_child();
      ::close(p[0]);
      std::string out;
      int code = 0;
      try {
        out = fn(i);
      } catch (const std::exception& e) {
        out = std::string("EXC: ") + e.what();
        code = 2;
      } catch (...) {
        out = "EXC: unknown";
        code = 3;
      }
      size_t off = 0;
      while (off < out.size()) {  // bounded by the output size
        const ssize_t w = ::write(p[1], out.data() + off, out.size() - off);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
      ::close(p[1]);
      ::_exit(code);
    }
    ::close(p[1]);
    pids[static_cast<size_t>(i)] = pid;
    fds[static_cast<size_t>(i)] = p[0];
  }
  std::vector<ChildResult> res(static_cast<size_t>(n));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int open = n;
  while (open > 0) {  // read until every pipe closed or the deadline
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    std::vector<pollfd> pfds;
    std::vector<int> idx;
    for (int i = 0; i < n; ++i) {
      if (fds[static_cast<size_t>(i)] >= 0) {
        pfds.push_back({fds[static_cast<size_t>(i)], POLLIN, 0});
        idx.push_back(i);
      }
    }
    if (::poll(pfds.data(), pfds.size(), static_cast<int>(std::min<long long>(left, 1000))) < 0) break;
    for (size_t k = 0; k < pfds.size(); ++k) {
      if (!(pfds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t r = ::read(pfds[k].fd, buf, sizeof(buf));
      if (r > 0) {
        res[static_cast<size_t>(idx[k])].out.append(buf, static_cast<size_t>(r));
      } else {
        ::close(pfds[k].fd);
        fds[static_cast<size_t>(idx[k])] = -1;
        --open;
      }
    }
  }
  for (int i = 0; i < n; ++i) {
    const auto ui = static_cast<size_t>(i);
    if (fds[ui] >= 0) {  // deadline passed: kill
      ::kill(pids[ui], SIGKILL);
      ::close(fds[ui]);
    }
    int status = 0;
    ::waitpid(pids[ui], &status, 0);
    res[ui].status = fds[ui] >= 0 ? -1 : status;
    res[ui].ok = fds[ui] < 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (fds[ui] >= 0) {
      res[ui].out += "[killed at the " + std::to_string(timeout_ms) + " ms deadline]";
    } else if (WIFSIGNALED(status)) {   // say how a child died: a crash must be diagnosable
      res[ui].out += "[child " + std::to_string(i) + " died of signal " + std::to_string(WTERMSIG(status)) + "]";
    }
  }
  return res;
}

}  // namespace tether::net::testing
