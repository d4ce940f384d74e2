// The transport's sockets and their monitors (net/transport.h), without a
// communicator: a node whose peer connections are watched (set_on_link).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio.hpp>
#include <zmq.hpp>

#include "net/transport.h"
#include "test/net/net_test_util.h"

using tether::net::Header;
using tether::net::Kind;
using tether::net::Transport;
using tether::net::TransportPeer;

TEST_SUITE("transport") {

// ZeroMQ's I/O thread sends socket-monitor events blocking. A DEALER's monitor
// left running after its reader closed blocks that thread at the DEALER's next
// event, and with it every socket of the node's context: a node went silent
// both ways after reset_peer, now and then (the averaging suite's crash and
// rejoin case, int8). The unwatch step is held here at the point the race
// needed: node 1 then drops the watched connection (an event on a monitor
// without a reader, unless the monitor was stopped first) and a frame to
// node 2 must still arrive.
TEST_CASE("a watched peer's link drops after its watch ended: the node's other links still carry frames") {
  const std::vector<int> ports = tether::net::testing::free_ports(3);
  std::vector<TransportPeer> peers;
  for (int i = 0; i < 3; ++i) peers.push_back({i, "127.0.0.1", ports[static_cast<size_t>(i)], ""});
  zmq::context_t others(1);  // nodes 1 and 2: plain ROUTERs, a context of their own
  std::optional<zmq::socket_t> node1(std::in_place, others, zmq::socket_type::router);
  zmq::socket_t node2(others, zmq::socket_type::router);
  node1->set(zmq::sockopt::linger, 0);
  node2.set(zmq::sockopt::linger, 0);
  node1->bind("tcp://127.0.0.1:" + std::to_string(ports[1]));
  node2.bind("tcp://127.0.0.1:" + std::to_string(ports[2]));

  boost::asio::io_context io;
  std::atomic<uint64_t> sent{0}, recv{0};
  Transport t(io, 0, peers, 0.0, 0.0, [](std::vector<zmq::message_t>&, bool, int) {}, &sent, &recv);
  bool up[3] = {false, false, false};
  t.set_on_link([&](int peer, bool is_up) { up[peer] = is_up; });
  t.open();
  t.drain();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(up[1] && up[2]) && std::chrono::steady_clock::now() < deadline)  // bounded
    io.run_for(std::chrono::milliseconds(20));
  REQUIRE_MESSAGE(up[1], "the DEALER to node 1 never finished its handshake");
  REQUIRE_MESSAGE(up[2], "the DEALER to node 2 never finished its handshake");

  t.unwatch_for_test(1);
  node1.reset();  // node 1's side closes: the DEALER to it reports DISCONNECTED
  io.run_for(std::chrono::milliseconds(300));

  Header h;
  h.kind = Kind::kHeartbeat;
  t.send(2, h, zmq::message_t(), nullptr);
  node2.set(zmq::sockopt::rcvtimeo, 50);
  bool arrived = false;
  for (int i = 0; i < 60 && !arrived; ++i) {  // bounded: 3 s
    io.run_for(std::chrono::milliseconds(1));
    zmq::message_t id;
    if (node2.recv(id)) {
      arrived = true;
      for (bool more = id.more(); more;) {
        zmq::message_t part;
        (void)node2.recv(part);
        more = part.more();
      }
    }
  }
  CHECK_MESSAGE(arrived, "nothing reached node 2 within 3 s: ZeroMQ's I/O thread is blocked");
  t.close(0);
}

}  // TEST_SUITE
