// tether._tether: the Python binding of runtime/averager.h (pybind11). The
// package python/tether/__init__.py wraps it for PyTorch; this module knows
// only a writable, C-contiguous float32 buffer (any object with the buffer
// protocol: a NumPy array viewing a tensor's storage), or three callables
// that move the parameters in and out when they live elsewhere (a CUDA
// tensor: CallbackParams).
//
// Exceptions keep the runtime's text: ConfigError (a ValueError) for config
// and node errors, StartRefused (a ValueError too: another config on a peer),
// PeerLost and NetError (RuntimeErrors) from the network; misuse is a
// RuntimeError. Blocking calls release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "net/communicator.h"
#include "runtime/averager.h"
#include "runtime/averaging.h"   // ParamStore
#include "runtime/config.h"

namespace py = pybind11;

namespace {

// Parameters the caller keeps elsewhere (a CUDA tensor): the averaging asks
// for x_i as it closes a round and hands results back as it applies merges,
// through Python callables, each given a NumPy array of `count` floats that
// views the runtime's host vector for the call only: read(dst) fills dst with
// x_i, write(src) sets x_i = src, add(c) adds c to x_i. Called on the
// caller's thread (inside step/finish/the constructor); takes the GIL.
class CallbackParams : public tether::ParamStore {
 public:
  CallbackParams(py::object read, py::object write, py::object add, size_t count)
      : read_(std::move(read)), write_(std::move(write)), add_(std::move(add)), count_(count) {}
  ~CallbackParams() override {
    py::gil_scoped_acquire gil;   // the last references go with the GIL held
    read_ = py::object();
    write_ = py::object();
    add_ = py::object();
  }
  size_t count() const override { return count_; }
  void read(float* dst) override { call(read_, dst); }
  void write(const float* src) override { call(write_, const_cast<float*>(src)); }   // the callee only reads it
  void add(const float* c) override { call(add_, const_cast<float*>(c)); }

 private:
  void call(const py::object& fn, float* p) {
    py::gil_scoped_acquire gil;
    // a view, not a copy: the capsule base keeps NumPy from owning the memory
    py::array_t<float> view({py::ssize_t(count_)}, {py::ssize_t(sizeof(float))}, p, py::capsule(p, [](void*) {}));
    fn(view);
  }

  py::object read_, write_, add_;
  size_t count_;
};

class PyAverager {
 public:
  // config: a file path (is_path) or JSON text; buffer: float32, writable,
  // C-contiguous; kept alive by this object.
  PyAverager(const std::string& config, bool is_path, const std::vector<std::string>& overrides, int node,
             py::buffer buffer)
      : buffer_(buffer) {
    py::buffer_info info = buffer.request(/*writable=*/true);
    if (info.format != py::format_descriptor<float>::format() || info.itemsize != sizeof(float)) {
      throw py::type_error("params: expected a float32 buffer, got format '" + info.format + "'");
    }
    if (info.ndim != 1 || info.strides[0] != ssize_t(sizeof(float))) {
      throw py::type_error("params: expected a one-dimensional contiguous buffer");
    }
    float* data = static_cast<float*>(info.ptr);
    const size_t count = size_t(info.shape[0]);
    tether::Config cfg = is_path ? tether::load_config(config, overrides) : tether::config_from_text(config, overrides);
    py::gil_scoped_release nogil;
    avg_ = std::make_unique<tether::Averager>(cfg, node, data, count);
  }

  // The parameters behind callables (CallbackParams): (read, write, add).
  PyAverager(const std::string& config, bool is_path, const std::vector<std::string>& overrides, int node,
             py::tuple callbacks, size_t count) {
    if (callbacks.size() != 3) throw py::type_error("callbacks: expected (read, write, add)");
    for (size_t i = 0; i < 3; ++i)
      if (!PyCallable_Check(callbacks[i].ptr())) throw py::type_error("callbacks: expected three callables");
    tether::Config cfg = is_path ? tether::load_config(config, overrides) : tether::config_from_text(config, overrides);
    auto store = std::make_unique<CallbackParams>(callbacks[0], callbacks[1], callbacks[2], count);
    py::gil_scoped_release nogil;
    avg_ = std::make_unique<tether::Averager>(cfg, node, std::move(store));
  }

  ~PyAverager() {
    py::gil_scoped_release nogil;   // the communicator's stop may wait for the I/O thread
    avg_.reset();
  }

  bool step(uint64_t images, std::optional<double> loss, std::optional<uint64_t> correct, std::optional<double> lr,
            int epoch) {
    tether::StepStats s;
    s.images = images;
    s.loss = loss;
    s.correct = correct;
    s.lr = lr;
    s.epoch = epoch;
    py::gil_scoped_release nogil;
    return avg_->step(s);
  }

  void finish(std::optional<double> test_acc) {
    py::gil_scoped_release nogil;
    avg_->finish(test_acc);
  }

  std::string metrics() const { return avg_->metrics().dump(); }
  tether::Averager& core() { return *avg_; }

 private:
  py::object buffer_;
  std::unique_ptr<tether::Averager> avg_;
};

}  // namespace

PYBIND11_MODULE(_tether, m) {
  m.doc() = "tether's averaging (runtime/averager.h) over a flat float32 buffer";

  static py::exception<tether::ConfigError> config_error(m, "ConfigError", PyExc_ValueError);
  static py::exception<tether::net::NetError> net_error(m, "NetError", PyExc_RuntimeError);
  static py::exception<tether::net::PeerLost> peer_lost(m, "PeerLost", net_error.ptr());
  static py::exception<tether::net::NoQuorum> no_quorum(m, "NoQuorum", net_error.ptr());
  static py::exception<tether::net::Excluded> excluded(m, "Excluded", net_error.ptr());
  static py::exception<tether::net::StartRefused> start_refused(m, "StartRefused", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tether::ConfigError& e) {
      config_error(e.what());
    } catch (const tether::net::StartRefused& e) {
      start_refused(e.what());
    } catch (const tether::net::PeerLost& e) {
      peer_lost(e.what());
    } catch (const tether::net::NoQuorum& e) {
      no_quorum(e.what());
    } catch (const tether::net::Excluded& e) {
      excluded(e.what());
    } catch (const tether::net::NetError& e) {
      net_error(e.what());
    } catch (const std::logic_error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  py::class_<PyAverager>(m, "Averager")
      .def(py::init<const std::string&, bool, const std::vector<std::string>&, int, py::buffer>(), py::arg("config"),
           py::arg("is_path"), py::arg("overrides"), py::arg("node"), py::arg("buffer"))
      .def(py::init<const std::string&, bool, const std::vector<std::string>&, int, py::tuple, size_t>(),
           py::arg("config"), py::arg("is_path"), py::arg("overrides"), py::arg("node"), py::arg("callbacks"),
           py::arg("count"))
      .def("step", &PyAverager::step, py::arg("images") = 0, py::arg("loss") = py::none(),
           py::arg("correct") = py::none(), py::arg("lr") = py::none(), py::arg("epoch") = 0)
      .def("finish", &PyAverager::finish, py::arg("test_acc") = py::none())
      .def("log_eval",
           [](PyAverager& a, double acc, std::optional<double> loss, int epoch) { a.core().log_eval(acc, loss, epoch); },
           py::arg("test_acc"), py::arg("test_loss") = py::none(), py::arg("epoch") = 0)
      .def("metrics", &PyAverager::metrics)
      .def_property_readonly("steps", [](PyAverager& a) { return a.core().steps(); })
      .def_property_readonly("finished", [](PyAverager& a) { return a.core().finished(); })
      .def_property_readonly("stop_requested", [](PyAverager& a) { return a.core().stop_requested(); })
      .def_property_readonly("stop_reason", [](PyAverager& a) { return a.core().stop_reason(); })
      .def_property_readonly("ended", [](PyAverager& a) { return a.core().ended(); })
      .def_property_readonly("log_path", [](PyAverager& a) { return a.core().log_path(); })
      .def_property_readonly("node", [](PyAverager& a) { return a.core().node(); })
      .def_property_readonly("count", [](PyAverager& a) { return a.core().count(); });
}
