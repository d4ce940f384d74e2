// tether._tether: the Python binding of runtime/averager.h (pybind11). The
// package python/tether/__init__.py wraps it for PyTorch; this module knows
// only a writable, C-contiguous float32 buffer (any object with the buffer
// protocol: a NumPy array viewing a tensor's storage).
//
// Exceptions keep the runtime's text: ConfigError (a ValueError) for config
// and node errors, StartRefused (a ValueError too: another config on a peer),
// PeerLost and NetError (RuntimeErrors) from the network; misuse is a
// RuntimeError. Blocking calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "net/communicator.h"
#include "runtime/averager.h"
#include "runtime/config.h"

namespace py = pybind11;

namespace {

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
      .def_property_readonly("log_path", [](PyAverager& a) { return a.core().log_path(); })
      .def_property_readonly("node", [](PyAverager& a) { return a.core().node(); })
      .def_property_readonly("count", [](PyAverager& a) { return a.core().count(); });
}
