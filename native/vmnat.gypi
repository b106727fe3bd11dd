# The addon's one target, shared by native/binding.gyp (the normal build) and
# native/portable/binding.gyp (VMNAT_PORTABLE: the macOS code path, built on Linux for CI).
# gyp resolves the relative paths below against this file, so both builds compile the same sources.
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
        "src/host_tcp.cc",
        "src/icmp.cc",
        "src/hostif.cc",
        "src/vmnet.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "conditions": [
        ["OS=='linux'", {
          "defines": ["_GNU_SOURCE"],
          "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
          "cflags_cc": ["-std=c++17", "-fno-exceptions", "-pthread"],
          "ldflags": ["-pthread"]
        }],
        ["OS=='mac'", {
          # clang from the Xcode command-line tools. _DARWIN_C_SOURCE exposes SO_NOSIGPIPE,
          # IP_RECVTTL and arc4random alongside POSIX.
          "defines": ["_DARWIN_C_SOURCE"],
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "CLANG_CXX_LIBRARY": "libc++",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
            "GCC_ENABLE_CPP_RTTI": "NO",
            "WARNING_CFLAGS": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
            # vmnet.framework: --mode host|bridged on macOS (src/vmnet.cc; untested, no Mac here).
            "OTHER_LDFLAGS": ["-framework", "vmnet"]
          }
        }]
      ]
    }
  ]
}
