#!/usr/bin/env bash
# Builds .cache/guest/ssh.cpio: an extra initramfs archive that gives the test guest a real SSH
# server (Debian's dropbear) for the labs' port-forward step. Appended after initramfs.cpio (the
# kernel unpacks concatenated archives), it adds:
#   /usr/sbin/dropbear            from dropbear-bin
#   its shared libraries          from libtomcrypt1, libtommath1, libgmp10, zlib1g, libcrypt1, libc6
#                                 (and the dynamic loader at /lib64/ld-linux-x86-64.so.2)
#   /etc/passwd, /etc/shells      root with /bin/sh (busybox), so dropbear knows the user
# The key the host logs in with is the lab's, added per run (/root/.ssh/authorized_keys).
#
# Everything comes from Debian packages fetched with `apt-get download` (never installed), like
# the kernel in scripts/build-guest.sh. Idempotent: skipped when ssh.cpio is newer than this
# script; --force rebuilds. Concurrent runs serialize on a lock. Needs apt, dpkg-deb, cpio.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${VMNAT_GUEST_DIR:-$root/.cache/guest}"
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "build-guest-ssh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf 'build-guest-ssh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in apt-get dpkg-deb cpio flock; do
  command -v "$tool" >/dev/null || die "missing $tool"
done

mkdir -p "$out"
exec 9>"$out/.ssh.lock"
flock 9

archive="$out/ssh.cpio"
if [ "$force" = 0 ] && [ -f "$archive" ] && [ "$archive" -nt "$0" ]; then
  exit 0
fi

packages=(dropbear-bin libtomcrypt1 libtommath1 libgmp10 zlib1g libcrypt1 libc6)
debs="$out/ssh-debs"
mkdir -p "$debs"
missing=()
for p in "${packages[@]}"; do
  ls "$debs/${p}"_*.deb >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "downloading ${missing[*]}"
  if ! (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}" >&2); then
    log "apt-get download failed; running apt-get update and retrying"
    apt-get update -qq >&2
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}" >&2)
  fi
fi

x="$out/ssh-extract"
rd="$out/ssh.d"
rm -rf "$x" "$rd"
mkdir -p "$x"
for p in "${packages[@]}"; do
  dpkg-deb -x "$(ls "$debs/${p}"_*.deb | head -1)" "$x"
done

mkdir -p "$rd/usr/sbin" "$rd/lib/x86_64-linux-gnu" "$rd/usr/lib/x86_64-linux-gnu" "$rd/lib64" "$rd/etc/dropbear" "$rd/root"
cp "$x/usr/sbin/dropbear" "$rd/usr/sbin/dropbear"
# Each library under its soname, as a regular file (cp follows the package's symlinks).
for lib in libc.so.6 libcrypt.so.1 libz.so.1 ld-linux-x86-64.so.2; do
  [ -e "$x/lib/x86_64-linux-gnu/$lib" ] || die "$lib not in the packages"
  cp -L "$x/lib/x86_64-linux-gnu/$lib" "$rd/lib/x86_64-linux-gnu/$lib"
done
for lib in libtomcrypt.so.1 libtommath.so.1 libgmp.so.10; do
  [ -e "$x/usr/lib/x86_64-linux-gnu/$lib" ] || die "$lib not in the packages"
  cp -L "$x/usr/lib/x86_64-linux-gnu/$lib" "$rd/usr/lib/x86_64-linux-gnu/$lib"
done
# The ELF interpreter dropbear names; a relative link keeps it inside the guest's root.
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rd/lib64/ld-linux-x86-64.so.2"
# An empty password field with dropbear -s (no password logins): only the lab's key gets in.
echo 'root::0:0:root:/root:/bin/sh' > "$rd/etc/passwd"
echo 'root:x:0:' > "$rd/etc/group"
echo '/bin/sh' > "$rd/etc/shells"
chmod 0755 "$rd/usr/sbin/dropbear" "$rd/lib/x86_64-linux-gnu/"* "$rd/usr/lib/x86_64-linux-gnu/"*
chmod 0700 "$rd/root"
# The list above is dropbear's library closure by hand (Debian 12); check it in the staged root,
# where no host library can stand in for a missing one (chroot needs root, as the setup runs).
if [ "$(id -u)" = 0 ]; then
  chroot "$rd" /usr/sbin/dropbear -V >/dev/null 2>"$out/ssh-check.log" \
    || die "dropbear does not start in the staged root: $(cat "$out/ssh-check.log")"
  rm -f "$out/ssh-check.log"
fi

(cd "$rd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$archive.tmp"
mv "$archive.tmp" "$archive"
rm -rf "$x" "$rd"
log "ready: $archive ($(du -k "$archive" | cut -f1) KiB, $(ls "$debs" | sed -n 's/^dropbear-bin_\([^_]*\)_.*/dropbear \1/p'))"
