/**
 * DNS over TCP for a guest connection to 10.0.2.3:53 (RFC 1035 §4.2.2, RFC 7766): the host side
 * of a TCP NAT flow that is not a socket but the forwarder.
 *
 * Theory of operation: the guest's byte stream is split into messages by their 2-byte length
 * prefix; each goes to the forwarder as a TCP query, and each answer goes back with its prefix, in
 * whatever order they complete (RFC 7766 allows out-of-order answers; the ids tell them apart).
 * When the guest half-closes, we finish the answers still owed and then end our side. At most
 * `MAX_PENDING` queries per connection are in flight, and a partial message is bounded by the
 * 16-bit length, so a guest cannot make this buffer grow without limit.
 */
import type { HostEndpoint, HostEvents } from '../nat/tcp.ts';
import type { DnsForwarder } from './forwarder.ts';

const MAX_PENDING = 32;

export class DnsTcpEndpoint implements HostEndpoint {
  private buf: Buffer = Buffer.alloc(0);
  private inFlight = 0;
  private guestEnded = false;
  private done = false;
  private corked = false;

  constructor(
    private readonly forwarder: DnsForwarder,
    private readonly events: HostEvents,
  ) {}

  write(data: Buffer, written: () => void): void {
    if (this.done) return written();
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    this.drain();
    // Bytes are consumed as soon as they are parsed (or held, bounded by one 64 KiB message).
    queueMicrotask(written);
  }

  private drain(): void {
    while (this.buf.length >= 2 && this.inFlight < MAX_PENDING) {
      const len = this.buf.readUInt16BE(0);
      if (this.buf.length < 2 + len) break;
      const msg = this.buf.subarray(2, 2 + len);
      this.buf = this.buf.subarray(2 + len);
      this.inFlight++;
      this.forwarder.query(msg, 'tcp', (answer) => {
        this.inFlight--;
        if (this.done) return;
        const out = Buffer.allocUnsafe(2 + answer.length);
        out.writeUInt16BE(answer.length, 0);
        out.set(answer, 2);
        this.events.data(out);
        this.drain();
        this.maybeEnd();
      });
    }
  }

  private maybeEnd(): void {
    if (this.guestEnded && this.inFlight === 0 && !this.done) {
      this.done = true;
      this.events.end();
    }
  }

  end(): void {
    this.guestEnded = true;
    this.maybeEnd();
  }

  destroy(): void {
    this.done = true;
  }
  pause(): void {}
  resume(): void {}
  cork(): void {
    this.corked = true;
  }
  uncork(): void {
    this.corked = false;
  }
}
