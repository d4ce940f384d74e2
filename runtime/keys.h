// CURVE keys of a node (net.security "curve", DESIGN.md "Security"): the
// secret key file each node alone can read, the public keys in the config,
// and `tether keygen`, which writes them.
//
// A key file holds one key as Z85 text (40 characters) and a newline:
// node-<id>.key the secret key (mode 0600), node-<id>.pub the public one.
#pragma once

#include <string>

#include "runtime/config.h"

namespace tether {

struct NodeKeys {
  std::string secret_key, public_key;  // Z85
};

// The secret key file of `node`: net.secret_key_file, or
// <net.secret_key_file>/node-<node>.key when that is a directory.
std::string secret_key_path(const Config& cfg, int node);

// Reads and checks node `node`'s keys (net.security "curve"; `tether train`
// calls it, `tether config` does not, so that scripts read a config before
// its keys exist): net.secret_key_file and every peer's public_key are set,
// the file exists, is a regular file
// that group and others cannot access, holds a CURVE secret key, and its
// public key is the one cluster.peers lists for `node`. Throws ConfigError
// naming the file (or the JSON path) and what is wrong.
NodeKeys load_node_keys(const Config& cfg, int node);
// The keypair of one secret key file (what: the file as errors name it),
// refused with a ConfigError as load_node_keys refuses it; no config checks.
NodeKeys read_secret_key(const std::string& path, const std::string& what);

// A fresh keypair (zmq_curve_keypair), written as DIR/node-<id>.key (0600,
// created so, never readable by others) and DIR/node-<id>.pub; DIR is
// created. Returns the keys. Throws std::runtime_error naming the file.
NodeKeys write_keypair(const std::string& dir, int id);

// `tether keygen` (its own argument parser; argv[0] is "keygen"). Exit code.
int keygen_command(int argc, char** argv);

}  // namespace tether
