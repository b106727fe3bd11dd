#!/usr/bin/env bash
# Builds the native addon. `npm run build:native` runs this.
#   (no VMNAT_PORTABLE)  the normal build:   native/build/Release/vmnat.node
#   VMNAT_PORTABLE=1     the portable build: native/portable/build/Release/vmnat.node — the same
#                        sources with every platform guard on its non-Linux (macOS) branch;
#                        src/link/native.ts loads it when VMNAT_NATIVE=portable.
#   --if-needed          configure only if not configured yet, then an incremental make (a no-op
#                        when nothing changed): what `npm test` runs before the portable tests.
# Both builds live side by side, so tests can run against either without rebuilding in between.
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_nodedir="${npm_config_nodedir:-/usr}"   # local Node headers, no download
dir=native
if [ "${VMNAT_PORTABLE:-0}" != "0" ]; then dir=native/portable; fi
# npm's own node-gyp (npm puts it on PATH inside npm scripts; outside them, find it beside npm).
if command -v node-gyp >/dev/null 2>&1; then
  gyp=(node-gyp)
elif [ -n "${npm_config_node_gyp:-}" ]; then
  gyp=(node "$npm_config_node_gyp")
else
  gyp=(node "$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js")
fi
if [ "${1:-}" = "--if-needed" ]; then
  [ -f "$dir/build/Makefile" ] || [ -d "$dir/build/vmnat.xcodeproj" ] || "${gyp[@]}" configure --directory="$dir" >/dev/null
  "${gyp[@]}" build --silent --directory="$dir" >/dev/null  # make chatter; errors go to stderr
else
  "${gyp[@]}" rebuild --directory="$dir"
fi
