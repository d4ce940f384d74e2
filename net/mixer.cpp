#include "net/mixer.h"

namespace tether::net {

namespace {
void release_round_buffer(void* /*data*/, void* hint) {
  auto* owner = static_cast<std::shared_ptr<RoundBuffer>*>(hint);
  if ((*owner)->in_flight.fetch_sub(1) == 1 && (*owner)->on_released) (*owner)->on_released();
  delete owner;
}
}  // namespace

zmq::message_t zero_copy(const std::shared_ptr<RoundBuffer>& buf, size_t offset, size_t count) {
  if (count == 0) return zmq::message_t();
  buf->in_flight.fetch_add(1);
  auto* hint = new std::shared_ptr<RoundBuffer>(buf);
  return zmq::message_t(buf->data.data() + offset, count * sizeof(float), &release_round_buffer,
                        hint);
}

}  // namespace tether::net
