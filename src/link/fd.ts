/**
 * `fd N`: an inherited datagram socket (one end of a socketpair whose other end the VM holds,
 * e.g. qemu `-netdev socket,fd=` / `-netdev dgram` with an fd, or `vmnat -- COMMAND`).
 *
 * Theory of operation: the socket is already connected to its peer, so there is nothing to learn.
 * We check that N is a datagram socket (a stream socket would merge frames; qemu's stream
 * framing wants the `stream` link), make it non-blocking and close-on-exec (so children we spawn
 * later do not inherit the guest's wire), and run a FramePort on it. When the peer closes its end
 * the kernel tells us only when we send (ECONNREFUSED): the port reports that once via onError.
 * close() closes N.
 */
import { loadNative, type NativeAddon } from './native.ts';
import { NativePortLink, type LinkOptions } from './native-link.ts';
import { LinkError, systemError } from './errors.ts';

export class FdLink extends NativePortLink {
  readonly kind = 'fd' as const;
  readonly fd: number;

  private constructor(native: NativeAddon, fd: number, options: LinkOptions) {
    super(fd, { kind: 'dgram' }, options, native);
    this.fd = fd;
  }

  /** Adopts fd N. Throws EFD_TYPE if it is not a datagram socket. */
  static adopt(fd: number, options: LinkOptions = {}, native: NativeAddon = loadNative()): FdLink {
    if (!Number.isInteger(fd) || fd < 0) throw new LinkError('EFD_TYPE', `fd ${fd}: not a file descriptor number`);
    let type: string;
    try {
      type = native.fdSocketType(fd);
    } catch (err) {
      throw systemError(`fd ${fd}`, err);
    }
    if (type !== 'dgram') {
      const what = type === 'other' ? 'not a socket' : `a ${type} socket`;
      throw new LinkError('EFD_TYPE', `fd ${fd} is ${what}; the fd link needs a datagram socket (SOCK_DGRAM)`);
    }
    try {
      native.setNonblocking(fd);
      native.setCloexec(fd, true);
      return new FdLink(native, fd, options);
    } catch (err) {
      throw systemError(`fd ${fd}`, err);
    }
  }

  describe(): Record<string, string | number> {
    return { fd: this.fd };
  }
}
