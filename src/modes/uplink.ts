/**
 * The uplink of host-only and bridged modes: the one switch port that is not a guest.
 *
 * Theory of operation. On Linux the uplink is a TAP in vmnat's own network namespace:
 *  - host mode: `--host-if` (vmnat0) gets `--host-ip` (192.168.56.1/24) through SIOCSIFADDR, so
 *    the host's kernel owns that address, answers ARP for it and routes the prefix to the TAP;
 *    frames vmnat writes into the TAP are frames the host receives, and what the host sends to
 *    the guests comes out of it.
 *  - bridged mode: a TAP named after vmnat's PID (`vmb<pid>`) is enslaved to `--bridge` (an
 *    existing Linux bridge, SIOCBRADDIF): frames written into it enter the bridge as if from a
 *    wire, and the bridge hands it what is for the guests (and what it floods).
 * Both TAPs are opened without a vnet header, so the kernel never hands the switch a 64 KiB GSO
 * frame that a guest on a datagram socket could not take: it segments before the TAP. The device
 * goes away when vmnat closes it (not persistent), which also takes it off the bridge.
 * On macOS the uplink is a vmnet interface (vmnet-link.ts; untested).
 *
 * Errors opening the uplink are `UplinkError`s naming the flag to fix (`--host-if`, `--bridge`):
 * the CLI prints one line and exits 2 for the user's mistakes (no such bridge, no privilege).
 */
import { loadNative, type NativeAddon } from '../link/native.ts';
import { NativePortLink, type LinkOptions } from '../link/native-link.ts';
import type { Link } from '../link/types.ts';
import { formatIpv4 } from '../stack/wire/addr.ts';
import type { ModeConfig } from './mode.ts';
import { VmnetLink } from './vmnet-link.ts';

/** A TAP without a vnet header: plain Ethernet frames both ways. */
export class UplinkTapLink extends NativePortLink {
  readonly kind = 'tap' as const;

  constructor(
    native: NativeAddon,
    fd: number,
    readonly name: string,
    private readonly role: Record<string, string>,
    options: LinkOptions,
  ) {
    super(fd, { kind: 'tap', vnetHdr: false }, options, native);
  }

  describe(): Record<string, string | number> {
    return { tap: this.name, ...this.role };
  }
}

export class UplinkError extends Error {
  constructor(
    readonly flag: string,
    message: string,
    /** The errno name, when a system call refused. */
    readonly errno?: string,
  ) {
    super(`${flag}: ${message}`);
  }
}

function errnoOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : 'EIO';
}

/** Advice for the errors people hit most. */
function hint(code: string): string {
  if (code === 'EPERM' || code === 'EACCES') return ' (needs CAP_NET_ADMIN: run vmnat as root, e.g. with sudo)';
  if (code === 'EBUSY') return ' (another process holds that TAP)';
  return '';
}

/** Opens the uplink the mode needs, or undefined in nat mode. */
export function openUplink(mode: ModeConfig, options: LinkOptions = {}, native: NativeAddon = loadNative()): Link | undefined {
  switch (mode.kind) {
    case 'nat':
      return undefined;
    case 'host':
      if (mode.vmnet !== undefined) return VmnetLink.open({ mode: 'host', ...mode.vmnet }, options, native);
      return openHostTap(mode.hostIf, mode.hostIp, mode.prefixLen, options, native);
    case 'bridged':
      if (mode.vmnet !== undefined) return VmnetLink.open({ mode: 'bridged', sharedInterface: mode.bridge, ...mode.vmnet }, options, native);
      return openBridgeTap(mode.bridge, options, native);
  }
}

function openTap(flag: string, name: string, native: NativeAddon): { fd: number; name: string } {
  try {
    return native.tapOpen(name, undefined, undefined, false);
  } catch (err) {
    const code = errnoOf(err);
    throw new UplinkError(flag, `cannot open TAP ${name}: ${code}${hint(code)}`, code);
  }
}

function openHostTap(name: string, ip: number, prefixLen: number, options: LinkOptions, native: NativeAddon): Link {
  const tap = openTap('--host-if', name, native);
  try {
    native.ifSetIpv4(tap.name, ip, prefixLen);
  } catch (err) {
    native.closeFd(tap.fd);
    const code = errnoOf(err);
    throw new UplinkError('--host-ip', `cannot give ${tap.name} ${formatIpv4(ip)}/${prefixLen}: ${code}${hint(code)}`, code);
  }
  return new UplinkTapLink(native, tap.fd, tap.name, { role: 'host', host_ip: `${formatIpv4(ip)}/${prefixLen}` }, options);
}

function openBridgeTap(bridge: string, options: LinkOptions, native: NativeAddon): Link {
  // One TAP per vmnat process on the bridge, named so an operator can tell whose it is.
  const tap = openTap('--bridge', `vmb${process.pid}`, native);
  try {
    native.ifAddToBridge(tap.name, bridge);
  } catch (err) {
    native.closeFd(tap.fd);
    const code = errnoOf(err);
    const why = code === 'ENODEV' ? 'no such interface' : code === 'EOPNOTSUPP' || code === 'EINVAL' ? 'not a Linux bridge' : code;
    throw new UplinkError('--bridge', `cannot put a TAP on ${bridge}: ${why}${why === code ? hint(code) : ` (${code})`}`, code);
  }
  return new UplinkTapLink(native, tap.fd, tap.name, { role: 'bridge', bridge }, options);
}
