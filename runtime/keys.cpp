#include "runtime/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <zmq.h>

namespace tether {

namespace {

std::string public_of(const std::string& secret) {
  char pub[41] = {0};
  if (zmq_curve_public(pub, secret.c_str()) != 0) return "";
  return pub;
}

std::string octal(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777u);
  return buf;
}

}  // namespace

std::string secret_key_path(const Config& cfg, int node) {
  const std::string& f = cfg.net.secret_key_file;
  std::error_code ec;
  if (std::filesystem::is_directory(f, ec)) return (std::filesystem::path(f) / ("node-" + std::to_string(node) + ".key")).string();
  return f;
}

NodeKeys read_secret_key(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ConfigError(what + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ConfigError(what + ": cannot read: not a regular file");
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    throw ConfigError(what + ": a secret key must be readable by its owner alone, this file has mode " +
                      octal(st.st_mode) + " (chmod 600 " + path + ")");
  }
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) throw ConfigError(what + ": cannot read: " + std::strerror(errno ? errno : EIO));
  std::string rest;
  while (std::getline(in, rest)) {  // bounded by the file: only blank lines may follow the key
    if (rest.find_first_not_of(" \t\r") != std::string::npos) text += "\n" + rest;
  }
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ' || text.back() == '\t')) text.pop_back();
  uint8_t bin[32];
  const std::string pub = text.size() == 40 && zmq_z85_decode(bin, text.c_str()) ? public_of(text) : "";
  if (pub.empty()) {
    throw ConfigError(what + ": not a CURVE secret key (expected one line of 40 Z85 characters, as `tether keygen` "
                      "writes)");
  }
  return {text, pub};
}

NodeKeys load_node_keys(const Config& cfg, int node) {
  if (cfg.net.secret_key_file.empty()) {
    throw ConfigError("net.secret_key_file: missing (net.security is \"curve\": this node's secret key file, or a "
                      "directory holding node-<id>.key; make keys with `tether keygen --config CONFIG --out DIR`, or "
                      "set net.security \"none\" on trusted links)");
  }
  for (size_t i = 0; i < cfg.cluster.peers.size(); ++i) {   // in the file's order: the path names the entry
    if (cfg.cluster.peers[i].public_key.empty()) {
      throw ConfigError("cluster.peers[" + std::to_string(i) + "].public_key: missing (net.security is \"curve\": "
                        "every peer's public key; `tether keygen --config CONFIG --out DIR` fills them in)");
    }
  }
  const std::string path = secret_key_path(cfg, node);
  const NodeKeys keys = read_secret_key(path, path + " (net.secret_key_file, node " + std::to_string(node) + ")");
  const std::string& pub = keys.public_key;
  for (size_t i = 0; i < cfg.cluster.peers.size(); ++i) {  // i over the config's entries: the one of `node`
    const PeerConfig& p = cfg.cluster.peers[i];
    if (p.id != node) continue;
    if (p.public_key != pub) {
      throw ConfigError("cluster.peers[" + std::to_string(i) + "].public_key: " + p.public_key +
                        " does not match the secret key in " + path + " (whose public key is " + pub + ")");
    }
  }
  return keys;
}

NodeKeys write_keypair(const std::string& dir, int id) {
  std::filesystem::create_directories(dir);
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0) throw std::runtime_error(std::string("zmq_curve_keypair: ") + zmq_strerror(errno));
  const std::string base = (std::filesystem::path(dir) / ("node-" + std::to_string(id))).string();
  auto write = [](const std::string& path, const std::string& text, mode_t mode) {
    ::unlink(path.c_str());  // a new inode, created with `mode`: never readable by others in between
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
    const std::string line = text + "\n";
    const bool ok = ::fchmod(fd, mode) == 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    const int err = errno;
    if (::close(fd) != 0 || !ok) throw std::runtime_error(path + ": " + std::strerror(ok ? errno : err));
  };
  write(base + ".key", sec, 0600);
  write(base + ".pub", pub, 0644);
  return {sec, pub};
}

}  // namespace tether
