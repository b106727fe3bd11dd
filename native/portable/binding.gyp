# The portable build: the same sources with VMNAT_PORTABLE defined, so that every guard in
# ../src/platform.h takes its non-Linux (macOS) branch while compiling on Linux. Built into
# native/portable/build by `VMNAT_PORTABLE=1 npm run build:native` (scripts/build-native.sh) and
# loaded instead of the normal build when VMNAT_NATIVE=portable (src/link/native.ts). CI runs the
# transport tests against it: our evidence that the macOS I/O path works.
{
  "includes": ["../vmnat.gypi"],
  "target_defaults": {
    "defines": ["VMNAT_PORTABLE"]
  }
}
