# vmnat's native addon: a thin node-addon-api layer over system calls Node lacks (AF_UNIX datagram
# sockets, socketpair, TAP devices in a network namespace, batched frame I/O). Linux and macOS:
# everything Linux-only sits behind the guards of src/platform.h. The target itself is in
# vmnat.gypi, shared with portable/binding.gyp.
# Built by `npm install` (package.json "install": node-gyp rebuild --directory=native); offline
# builds need the local Node headers: npm_config_nodedir=/usr (or ~/.npmrc nodedir=/usr).
{
  "includes": ["vmnat.gypi"]
}
