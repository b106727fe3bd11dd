/**
 * `tap NAME [netns]`: a TAP device, optionally inside another network namespace (a container or a
 * test netns acting as the guest: its kernel is the guest's stack).
 *
 * Theory of operation: the addon opens /dev/net/tun on a helper thread that setns()es into the
 * namespace (our own threads never move), creates the device if missing (IFF_TAP|IFF_NO_PI: plain
 * Ethernet frames, no packet-info header) and brings it up. A device we created vanishes when we
 * close it; a persistent one made beforehand stays. Frames move one read()/write() each (a char
 * device has no recvmmsg), batched per poll event. The device is opened with a virtio_net_hdr
 * (IFF_VNET_HDR) and the TSO4 + CSUM offloads: a write() can carry one TCP frame of up to 64 KiB
 * that the kernel treats as GSO, and a read() may return one from the guest's kernel, whose partial
 * checksum the addon completes. That is what makes TCP cheap at MTU 1500 (one syscall and one pass
 * through the stack instead of ~45) in both directions. Deleting the device under us is reported once
 * through onError. Needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for another namespace).
 */
import { loadNative, type NativeAddon } from './native.ts';
import { NativePortLink, type LinkOptions } from './native-link.ts';
import { systemError } from './errors.ts';

export interface TapSpec {
  name: string;
  /** A netns file, e.g. /run/netns/NAME. */
  netnsPath?: string;
  /** A process whose network namespace to use (/proc/PID/ns/net). */
  netnsPid?: number;
}

export class TapLink extends NativePortLink {
  readonly kind = 'tap' as const;
  /** The device name the kernel reports (equals the requested one unless it held a %d pattern). */
  readonly name: string;
  private readonly netns: string | number | undefined;

  private constructor(native: NativeAddon, fd: number, name: string, netns: string | number | undefined, options: LinkOptions) {
    super(fd, { kind: 'tap', vnetHdr: true }, options, native);
    this.name = name;
    this.netns = netns;
  }

  static open(spec: TapSpec, options: LinkOptions = {}, native: NativeAddon = loadNative()): TapLink {
    const netns = spec.netnsPath ?? spec.netnsPid;
    const where = netns === undefined ? '' : ` in netns ${netns}`;
    let opened: { fd: number; name: string };
    try {
      opened = native.tapOpen(spec.name, spec.netnsPath, spec.netnsPid, true);
    } catch (err) {
      throw systemError(`tap ${spec.name}${where}`, err);
    }
    try {
      return new TapLink(native, opened.fd, opened.name, netns, options);
    } catch (err) {
      native.closeFd(opened.fd);
      throw systemError(`tap ${spec.name}${where}`, err);
    }
  }

  describe(): Record<string, string | number> {
    return this.netns === undefined ? { tap: this.name } : { tap: this.name, netns: this.netns };
  }
}
