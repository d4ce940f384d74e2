#include "bench/net/tcp_ring.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <thread>

namespace tether::bench {

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("tcp ring: " + what + ": " + std::strerror(errno));
}

sockaddr_in address(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("tcp ring: not an IPv4 address: " + host);
  return a;
}

void set_options(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

}  // namespace

TcpRing::TcpRing(int rank, const std::vector<std::string>& hosts, const std::vector<int>& ports,
                 size_t chunk_bytes, int timeout_ms)
    : rank_(rank), n_(static_cast<int>(hosts.size())), chunk_elems_(std::max<size_t>(1, chunk_bytes / 4)) {
  if (n_ < 2) return;  // a ring of one: allreduce copies
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) fail("socket");
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in me = address(hosts[static_cast<size_t>(rank)], ports[static_cast<size_t>(rank)]);
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&me), sizeof me) != 0 || ::listen(listener, 4) != 0) {
    ::close(listener);
    fail("bind " + hosts[static_cast<size_t>(rank)] + ":" + std::to_string(ports[static_cast<size_t>(rank)]));
  }
  const size_t next = static_cast<size_t>((rank + 1) % n_);
  const sockaddr_in to = address(hosts[next], ports[next]);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (succ_ < 0) {  // bounded by the deadline: the successor may not listen yet
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
      succ_ = fd;
      break;
    }
    ::close(fd);
    if (Clock::now() > deadline) {
      ::close(listener);
      fail("connect to " + hosts[next] + ":" + std::to_string(ports[next]));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pollfd p{listener, POLLIN, 0};
  const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
  if (::poll(&p, 1, std::max(left, 1)) != 1 || (pred_ = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)) < 0) {
    ::close(listener);
    fail("accept from the predecessor");
  }
  ::close(listener);
  set_options(succ_);
  set_options(pred_);
  recv_.resize(chunk_elems_);
}

TcpRing::~TcpRing() {
  if (succ_ >= 0) ::close(succ_);
  if (pred_ >= 0) ::close(pred_);
}

void TcpRing::allreduce(const std::vector<float>& in, std::vector<float>& out, int timeout_ms) {
  const size_t n = in.size();
  out.resize(n);
  if (n_ < 2) {
    std::copy(in.begin(), in.end(), out.begin());
    return;
  }
  const int N = n_, steps = 2 * (N - 1);
  auto mod = [N](int v) { return ((v % N) + N) % N; };
  auto seg_begin = [n, N](int s) { return static_cast<size_t>(s) * n / static_cast<size_t>(N); };
  auto chunks_in = [&](int s) { return (seg_begin(s + 1) - seg_begin(s) + chunk_elems_ - 1) / chunk_elems_; };
  // The segment sent at step k, and the one received: reduce-scatter, then all-gather.
  auto seg_sent = [&](int k) { return k < N - 1 ? mod(rank_ - k) : mod(rank_ + 1 - (k - (N - 1))); };
  auto seg_recv = [&](int k) { return k < N - 1 ? mod(rank_ - 1 - k) : mod(rank_ - (k - (N - 1))); };
  auto range = [&](int s, size_t c, size_t* b, size_t* e) {
    *b = seg_begin(s) + c * chunk_elems_;
    *e = std::min(seg_begin(s + 1), *b + chunk_elems_);
  };
  struct Out {
    const char* p;
    size_t left;
  };
  std::deque<Out> queue;
  auto push = [&](int k, size_t c) {
    size_t b, e;
    range(seg_sent(k), c, &b, &e);
    const float* src = k == 0 ? in.data() : out.data();  // a chunk sent at k > 0 is final in out (see below)
    if (e > b) queue.push_back({reinterpret_cast<const char*>(src + b), (e - b) * 4});
  };
  for (size_t c = 0; c < chunks_in(seg_sent(0)); ++c) push(0, c);  // c over step 0's chunks
  // Receiving chunk c of step k; skip empty segments (n < N).
  int k = 0;
  size_t c = 0, got = 0;
  auto skip_empty = [&]() {
    while (k < steps && chunks_in(seg_recv(k)) == 0) ++k;  // bounded: k grows to steps
  };
  skip_empty();
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (k < steps || !queue.empty()) {  // bounded by the deadline
    while (!queue.empty()) {  // bounded: each pass writes or breaks
      const ssize_t w = ::send(succ_, queue.front().p, queue.front().left, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        fail("send to the successor");
      }
      queue.front().p += w;
      queue.front().left -= static_cast<size_t>(w);
      if (queue.front().left != 0) break;
      queue.pop_front();
    }
    if (k == steps && queue.empty()) break;  // the last write just left
    if (Clock::now() > deadline) throw std::runtime_error("tcp ring: all-reduce timed out");
    pollfd p[2] = {{pred_, static_cast<short>(k < steps ? POLLIN : 0), 0},
                   {succ_, static_cast<short>(queue.empty() ? 0 : POLLOUT), 0}};
    if (::poll(p, 2, 100) < 0 && errno != EINTR) fail("poll");
    while (k < steps) {  // bounded: each pass reads or breaks
      const int s = seg_recv(k);
      size_t b, e;
      range(s, c, &b, &e);
      const size_t need = (e - b) * 4;
      // A partial sum lands in recv_; the mean (all-gather) straight in place.
      char* dst = k < N - 1 ? reinterpret_cast<char*>(recv_.data()) : reinterpret_cast<char*>(out.data() + b);
      const ssize_t r = ::read(pred_, dst + got, need - got);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        fail("read from the predecessor");
      }
      if (r == 0) throw std::runtime_error("tcp ring: the predecessor closed the connection");
      got += static_cast<size_t>(r);
      if (got < need) continue;
      got = 0;
      if (k < N - 1) {  // own values + the partial sum; the owner divides the complete one
        const float* mine = in.data() + b;
        float* o = out.data() + b;
        for (size_t j = 0; j < e - b; ++j) o[j] = mine[j] + recv_[j];  // j over the chunk
        if (k == N - 2) {
          const float nodes = static_cast<float>(N);
          for (size_t j = 0; j < e - b; ++j) o[j] /= nodes;  // j over the chunk
        }
      }
      // Forward unless this was the last step. A partial sum written to out
      // here is sent before the mean of the same chunk can come back around.
      if (k + 1 < steps) push(k + 1, c);
      if (++c == chunks_in(s)) {
        c = 0;
        ++k;
        skip_empty();
      }
    }
  }
}

}  // namespace tether::bench
