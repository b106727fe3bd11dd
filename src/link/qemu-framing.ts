/**
 * qemu's stream framing (`-netdev stream` / `-netdev socket,connect=`): each frame is preceded by
 * its length as a 4-byte big-endian integer. A byte stream keeps no boundaries, so a chunk may
 * hold many frames, part of one, or a split length prefix.
 *
 * Theory of operation: `QemuFrameDecoder.decode(chunk, out)` appends every frame the chunk
 * completes to `out`. Frames lying wholly inside the chunk are views into it (no copy). A frame
 * that straddles chunks is assembled in one of two buffers used alternately: the frame completed
 * at the start of a chunk may still be in `out` while the next split frame begins at its end, and
 * it must not be overwritten before the caller has used it. Views are valid until the next
 * decode() call. A length of 0 or above `maxFrame` means the stream is not (or no longer) qemu
 * framing: decode() reports it and the caller drops the connection — no resynchronisation is
 * possible in a length-prefixed stream.
 *
 * The encoder side is `writeQemuHeader`: callers write prefix and frame into their own buffer.
 */

/** qemu's own receive limit (NET_BUFSIZE = 4096 + 65536): nothing longer is a frame. */
export const QEMU_MAX_FRAME = 4096 + 65536;

export type DecodeResult = { ok: true } | { ok: false; badLength: number };

export class QemuFrameDecoder {
  private readonly maxFrame: number;
  private readonly header = new Uint8Array(4);
  private headerFill = 0;
  /** Length of the frame being assembled across chunks; 0 when none. */
  private pendingLen = 0;
  private pendingFill = 0;
  private readonly assembly: [Uint8Array, Uint8Array];
  private which = 0;

  constructor(maxFrame: number = QEMU_MAX_FRAME) {
    this.maxFrame = maxFrame;
    this.assembly = [new Uint8Array(maxFrame), new Uint8Array(maxFrame)];
  }

  /** Bytes of an incomplete frame or prefix held from earlier chunks. */
  get buffered(): number {
    return this.headerFill + this.pendingFill;
  }

  decode(chunk: Uint8Array, out: Uint8Array[]): DecodeResult {
    let pos = 0;
    const end = chunk.length;
    // 1. Finish a frame begun in an earlier chunk.
    if (this.pendingLen > 0) {
      const buf = this.assembly[this.which] as Uint8Array;
      const take = Math.min(this.pendingLen - this.pendingFill, end);
      buf.set(chunk.subarray(0, take), this.pendingFill);
      this.pendingFill += take;
      pos = take;
      if (this.pendingFill < this.pendingLen) return { ok: true };
      out.push(buf.subarray(0, this.pendingLen));
      this.which ^= 1;
      this.pendingLen = 0;
      this.pendingFill = 0;
    }
    while (pos < end) {
      // 2. The length prefix, possibly split.
      let len: number;
      if (this.headerFill > 0 || end - pos < 4) {
        while (this.headerFill < 4 && pos < end) this.header[this.headerFill++] = chunk[pos++] as number;
        if (this.headerFill < 4) return { ok: true };
        this.headerFill = 0;
        const h = this.header;
        len = (((h[0] as number) << 24) | ((h[1] as number) << 16) | ((h[2] as number) << 8) | (h[3] as number)) >>> 0;
      } else {
        len =
          (((chunk[pos] as number) << 24) |
            ((chunk[pos + 1] as number) << 16) |
            ((chunk[pos + 2] as number) << 8) |
            (chunk[pos + 3] as number)) >>>
          0;
        pos += 4;
      }
      if (len === 0 || len > this.maxFrame) return { ok: false, badLength: len };
      // 3. The frame: a view if whole, else start assembling.
      if (end - pos >= len) {
        out.push(chunk.subarray(pos, pos + len));
        pos += len;
      } else {
        const buf = this.assembly[this.which] as Uint8Array;
        buf.set(chunk.subarray(pos, end), 0);
        this.pendingLen = len;
        this.pendingFill = end - pos;
        return { ok: true };
      }
    }
    return { ok: true };
  }
}

/** Writes the 4-byte big-endian length prefix for a frame of `len` bytes at `buf[off]`. */
export function writeQemuHeader(buf: Uint8Array, off: number, len: number): void {
  buf[off] = (len >>> 24) & 0xff;
  buf[off + 1] = (len >>> 16) & 0xff;
  buf[off + 2] = (len >>> 8) & 0xff;
  buf[off + 3] = len & 0xff;
}
