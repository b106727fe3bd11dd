#!/usr/bin/env bash
# Builds the real-VM test guest into .cache/guest/ (gitignored):
#   vmlinux          the Debian kernel as an uncompressed ELF: qemu boots it directly, which under
#                    TCG reaches a DHCP lease in ~3 s instead of 6–10 s through the bzImage
#   initramfs.cpio   busybox-static, the virtio-net module chain, /init and shell helpers
#                    (scripts/guest/); the test harness appends a second archive with /test.sh
#   kernel-release   the kernel's release string (for the record)
#
# Idempotent: each step is skipped when its output exists and is newer than its inputs (edit
# scripts/guest/* and the next run rebuilds the initramfs); --force rebuilds everything, reusing
# the downloaded .deb if apt still names that package. Concurrent runs serialize on a lock.
# Needs (Debian packages): apt, dpkg, busybox-static, cpio, xz-utils (util-linux for flock);
# the tests also need qemu-system-x86. The kernel package is fetched with `apt-get download`
# (never installed); `apt-get update` runs only when apt cannot locate the package.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${VMNAT_GUEST_DIR:-$root/.cache/guest}"
guest_src="$here/guest"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "build-guest: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# The modules virtio-net needs, in load order (Debian's package has no modules.dep to resolve it).
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         failover net_failover virtio_net)

start=$(date +%s.%N)
log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb cpio xz flock; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install apt dpkg cpio xz-utils)"
done
busybox=/bin/busybox
[ -x "$busybox" ] || die "missing $busybox (apt-get install busybox-static)"
# The Debian `busybox` package is dynamically linked and would not run in an initramfs without libc.
# (Its banner is read whole, not through `| head`: with pipefail a SIGPIPE there fails the check.)
banner=$(LC_ALL=C "$busybox" 2>&1 || true)
if [[ "$banner" != BusyBox* ]] || ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is not a static busybox (apt-get install busybox-static)"
fi

if [ "$force" = 1 ]; then
  # Everything but the downloaded package, which is reused below if apt still names it.
  find "$out" -mindepth 1 -maxdepth 1 ! -name 'linux-image-*.deb' -exec rm -rf {} + 2>/dev/null || true
fi
mkdir -p "$out"
# Test workers may call this at the same time; the second waits, then finds everything built.
exec 9>"$out/.lock"
flock 9

# --- 1. the kernel package ----------------------------------------------------------------------
# linux-image-amd64 is a meta package; it depends on the versioned image (linux-image-6.1.0-N-amd64).
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
# Without --force, a package already here is used as is: no apt query at all (works offline).
deb="$(ls "$out"/linux-image-*.deb 2>/dev/null | head -1 || true)"
if [ -z "$deb" ] || [ "$force" = 1 ]; then
  pkg="$(kernel_pkg)"
  if [ -z "$pkg" ]; then
    log "apt cannot resolve linux-image-amd64; running apt-get update"
    apt-get update -qq >&2
    pkg="$(kernel_pkg)"
  fi
  [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 to a kernel package"
  deb="$(ls "$out/${pkg}"_*.deb 2>/dev/null | head -1 || true)"
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    rm -f "$out"/linux-image-*.deb
    if ! (cd "$out" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2); then
      log "apt-get download failed; running apt-get update and retrying"
      apt-get update -qq >&2
      (cd "$out" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2)
    fi
    deb="$(ls "$out/${pkg}"_*.deb | head -1 || true)"
  fi
fi

# --- 2. vmlinuz + modules out of the package (only the files we need) ----------------------------
stage="$out/kernel"
if [ ! -f "$stage/.done" ] || [ "$deb" -nt "$stage/.done" ]; then
  log "extracting $(basename "$deb")"
  rm -rf "$stage"
  mkdir -p "$stage"
  patterns=('./boot/vmlinuz-*')
  for m in "${modules[@]}"; do patterns+=("*/$m.ko" "*/$m.ko.xz"); done
  # Streaming the data tarball through tar with wildcards avoids writing ~400 MB of modules to disk.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$stage" --wildcards "${patterns[@]}" 2>/dev/null || true
  touch "$stage/.done"
fi
vmlinuz="$(ls "$stage"/boot/vmlinuz-* 2>/dev/null | head -1 || true)"
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $(basename "$deb")"
release="${vmlinuz##*/vmlinuz-}"

# --- 3. vmlinux: the ELF inside the bzImage ------------------------------------------------------
# The bzImage's payload is an xz stream (magic FD 37 7A 58 5A 00); decompressed, it is the ELF.
if [ ! -f "$out/vmlinux" ] || [ "$vmlinuz" -nt "$out/vmlinux" ]; then
  log "extracting vmlinux from $(basename "$vmlinuz")"
  offset="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1 || true)"
  [ -n "$offset" ] || die "no xz stream in $vmlinuz (kernel compressed otherwise?)"
  # --single-stream: the compressed kernel is followed by other bytes, which are not xz. xz stops
  # reading there, so tail may die of SIGPIPE: the ELF check below is what decides success.
  { tail -c +"$((offset + 1))" "$vmlinuz" | xz -dc --single-stream > "$out/vmlinux.tmp"; } || true
  [ "$(head -c 4 "$out/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ] \
    || die "decompressed kernel is not an ELF"
  mv "$out/vmlinux.tmp" "$out/vmlinux"
  echo "$release" > "$out/kernel-release"
fi

# --- 4. the initramfs ----------------------------------------------------------------------------
rebuild=0
[ -f "$out/initramfs.cpio" ] || rebuild=1
if [ "$rebuild" = 0 ]; then
  for f in "$busybox" "$stage/.done" "$0" "$guest_src"/*; do
    if [ "$f" -nt "$out/initramfs.cpio" ]; then rebuild=1; break; fi
  done
fi
if [ "$rebuild" = 1 ]; then
  log "building initramfs"
  rd="$out/initramfs.d"
  rm -rf "$rd"
  mkdir -p "$rd"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,lib/modules}
  cp "$busybox" "$rd/bin/busybox"
  ln -s busybox "$rd/bin/sh"
  cp "$guest_src/init" "$rd/init"
  cp "$guest_src/udhcpc.script" "$rd/etc/udhcpc.script"
  cp "$guest_src/vmnat.sh" "$rd/etc/vmnat.sh"
  chmod 0755 "$rd/init" "$rd/etc/udhcpc.script" "$rd/bin/busybox"
  for m in "${modules[@]}"; do
    ko="$(find "$stage/lib/modules" -name "$m.ko" -o -name "$m.ko.xz" | head -1 || true)"
    [ -n "$ko" ] || die "module $m not found in the kernel package"
    case "$ko" in
      *.xz) xz -dc "$ko" > "$rd/lib/modules/$m.ko" ;;
      *) cp "$ko" "$rd/lib/modules/$m.ko" ;;
    esac
  done
  # Without /dev/console in the archive the kernel starts /init with no stdio. mknod needs root;
  # /init falls back to opening /dev/ttyS0 itself when it is missing.
  mknod -m 600 "$rd/dev/console" c 5 1 2>/dev/null || log "no /dev/console node (not root?): /init will fall back"
  (cd "$rd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out/initramfs.cpio.tmp"
  mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
  rm -rf "$rd"
fi

end=$(date +%s.%N)
log "ready in $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }') s: $out (kernel $release)"
