// A stranger hammering one tether node (bench/hostile.sh): sends hostile
// messages to 127.0.0.1:PORT and prints how many it sent.
//
// usage: hostile_client --port P --mode nokey|wrongkey|frames --count N [--server-key Z85]
//   nokey     raw TCP connections, each a ZMTP 3.0 greeting with the NULL
//             mechanism (no key) followed by ZMTP messages, each a tether
//             header frame and a payload frame (a ring chunk claiming peer
//             1); counts the messages whose bytes the kernel accepted before
//             the node closed the connection. New connections until N.
//   wrongkey  CURVE clients with their own keypair and a wrong server key
//             (--server-key: the node's real key, then the client is a valid
//             key not in the list): each connection attempt is one message
//             (the CURVE HELLO; nothing else can leave before the handshake).
//             N attempts, one socket each, 64 at a time.
//   frames    one plaintext DEALER (for net.security "none") sending N frames
//             of the kinds of test/net/test_communicator.cpp's hostile test,
//             in turn: bad magic, version, header checksum, truncated header,
//             bad kind, oversized, length mismatch, unknown sender, round
//             outside the window, bad payload checksum, non-finite value,
//             a well-formed hello claiming peer 1 (identity_taken).
// Output: "sent=N seconds=S".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "net/wire.h"

using namespace tether::net;

namespace {

// [header][payload] of a ring chunk from peer 1 (round 0, step 0, 64 floats),
// then edited into one hostile kind k.
std::pair<std::vector<unsigned char>, std::vector<unsigned char>> hostile(int k) {
  Header h;
  h.kind = Kind::kRing;
  h.sender = 1;
  h.epoch = 1;  // the first view: data frames of an older one are dropped before any other check
  h.count = 64;
  std::vector<float> payload(64, 1.0f);
  switch (k % 12) {
    case 0: h.magic = 0x0badf00d; break;
    case 1: h.version = 99; break;
    case 2: break;  // header checksum: flipped below
    case 3: break;  // truncated below
    case 4: h.kind = static_cast<Kind>(42); break;
    case 5: h.count = uint64_t{1} << 40; break;
    case 6: payload.resize(63); break;
    case 7: h.sender = 999; break;
    case 8: h.round = uint64_t{1} << 40; break;
    case 9: break;  // payload checksum: wrong below
    case 10: payload[5] = std::numeric_limits<float>::quiet_NaN(); break;
    case 11: h.kind = Kind::kHello; h.count = 0; payload.assign(20, 0.0f); break;  // 80 bytes: a hello's 10 fields
  }
  std::vector<unsigned char> head(kHeaderBytes), body(payload.size() * 4);
  std::memcpy(body.data(), payload.data(), body.size());
  h.payload_bytes = k % 12 == 6 ? 64 * 4 : body.size();
  h.payload_hash = k % 12 == 9 ? 12345 : payload_hash(body.data(), body.size());
  encode_header(h, head.data());
  if (k % 12 == 2) head[20] ^= 0x40;
  if (k % 12 == 3) head.resize(50);
  return {head, body};
}

int tcp_connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// nokey: greeting + messages per connection until `count` messages were taken.
uint64_t run_nokey(int port, uint64_t count) {
  std::vector<unsigned char> greeting(64, 0);
  greeting[0] = 0xff;
  greeting[9] = 0x7f;
  greeting[10] = 3;
  std::memcpy(greeting.data() + 12, "NULL", 4);
  // one ZMTP message: [more|short][72][header] [short][256][payload]
  const auto [head, body] = hostile(0);
  std::vector<unsigned char> msg = {0x01, static_cast<unsigned char>(head.size())};
  msg.insert(msg.end(), head.begin(), head.end());
  msg.push_back(0x00);
  msg.push_back(static_cast<unsigned char>(body.size() > 255 ? 255 : body.size()));
  msg.insert(msg.end(), body.begin(), body.begin() + msg.back());
  std::vector<unsigned char> batch;
  for (int i = 0; i < 1000; ++i) batch.insert(batch.end(), msg.begin(), msg.end());
  uint64_t sent = 0;
  int refused = 0;
  for (int conn = 0; sent < count && conn < 10000000 && refused < 100; ++conn) {  // bounded: one connection per loop
    const int fd = tcp_connect(port);
    if (fd < 0) {  // the node is gone: stop after 100 refusals in a row
      ++refused;
      usleep(10000);
      continue;
    }
    refused = 0;
    if (::send(fd, greeting.data(), greeting.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(greeting.size())) {
      for (int b = 0; b < 100 && sent < count; ++b) {  // until the node closes: at most 100 batches
        const ssize_t w = ::send(fd, batch.data(), batch.size(), MSG_NOSIGNAL);
        if (w <= 0) break;
        sent += static_cast<uint64_t>(w) / msg.size();
        if (static_cast<size_t>(w) < batch.size()) break;
      }
    }
    ::close(fd);
  }
  return sent;
}

uint64_t run_wrongkey(int port, uint64_t count, const std::string& server_key) {
  zmq::context_t ctx(1);
  char spub[41], ssec[41], pub[41], sec[41];
  zmq_curve_keypair(spub, ssec);
  const std::string server = server_key.empty() ? std::string(spub) : server_key;
  uint64_t sent = 0;
  while (sent < count) {  // 64 connections at a time, each tries once
    std::vector<zmq::socket_t> socks;
    for (int i = 0; i < 64 && sent < count; ++i, ++sent) {
      zmq_curve_keypair(pub, sec);
      zmq::socket_t& d = socks.emplace_back(ctx, zmq::socket_type::dealer);
      d.set(zmq::sockopt::linger, 0);
      d.set(zmq::sockopt::reconnect_ivl, -1);
      d.set(zmq::sockopt::curve_serverkey, server);
      d.set(zmq::sockopt::curve_publickey, std::string(pub));
      d.set(zmq::sockopt::curve_secretkey, std::string(sec));
      d.connect("tcp://127.0.0.1:" + std::to_string(port));
    }
    usleep(200000);  // let the handshakes fail before the sockets close (a busy node answers late)
  }
  return sent;
}

uint64_t run_frames(int port, uint64_t count) {
  zmq::context_t ctx(1);
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, std::string("evil"));
  d.set(zmq::sockopt::linger, 60000);  // every frame delivered before exit (the node reads at its pace)
  d.set(zmq::sockopt::sndhwm, 10000);
  d.connect("tcp://127.0.0.1:" + std::to_string(port));
  std::vector<std::pair<std::vector<unsigned char>, std::vector<unsigned char>>> kinds;
  for (int k = 0; k < 12; ++k) kinds.push_back(hostile(k));
  uint64_t sent = 0;
  for (; sent < count; ++sent) {  // blocking sends: the node's pace (TCP back-pressure)
    const auto& [head, body] = kinds[sent % kinds.size()];
    d.send(zmq::buffer(head), zmq::send_flags::sndmore);
    d.send(zmq::buffer(body));
  }
  return sent;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  uint64_t count = 0;
  std::string mode, server_key;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--port") port = std::atoi(v.c_str());
    else if (k == "--count") count = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "--mode") mode = v;
    else if (k == "--server-key") server_key = v;
  }
  if (port <= 0 || count == 0 || (mode != "nokey" && mode != "wrongkey" && mode != "frames")) {
    std::fprintf(stderr, "usage: %s --port P --mode nokey|wrongkey|frames --count N [--server-key Z85]\n", argv[0]);
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t sent = mode == "nokey" ? run_nokey(port, count)
                        : mode == "wrongkey" ? run_wrongkey(port, count, server_key)
                                             : run_frames(port, count);
  std::printf("sent=%llu seconds=%.2f\n", static_cast<unsigned long long>(sent),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
