# vmnat's native addon: a thin node-addon-api layer over system calls Node lacks (AF_UNIX datagram
# sockets, socketpair, TAP devices in a network namespace, batched frame I/O). Linux only.
# Built by `npm install` (package.json "install": node-gyp rebuild --directory=native); offline
# builds need the local Node headers: npm_config_nodedir=/usr (or ~/.npmrc nodedir=/usr).
{
  "targets": [
    {
      "target_name": "vmnat",
      "sources": [
        "src/addon.cc",
        "src/common.cc",
        "src/sockets.cc",
        "src/tap.cc",
        "src/frame_port.cc",
        "src/icmp.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "_GNU_SOURCE"
      ],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
