/**
 * DHCP option writer and value encoders (RFC 2132, RFC 3396 long options, RFC 3397 search list).
 *
 * Theory of operation: a reply is built in one buffer whose size is fixed up front from the
 * client's maximum message size. `DhcpOptionWriter` appends options after the magic cookie and
 * always keeps one byte for the End option, so a reply is well-formed however many options were
 * refused. Each write is all-or-nothing: an option that does not fit is not written at all and the
 * call returns false, so the caller can put the options that matter most first and let the rest
 * fall off. Values longer than 255 bytes are split into consecutive instances of the same code
 * (RFC 3396), which receivers concatenate.
 *
 * The search list (option 119) is a sequence of DNS names in RFC 1035 wire form with message
 * compression, pointers being offsets from the start of the option's (concatenated) data; it is
 * encoded once, when the server is configured.
 */
import { writeIpv4, type Ipv4Addr } from '../stack/wire/addr.ts';
import { DhcpOpt } from './message.ts';

export class DhcpOptionWriter {
  /**
   * @param buf the reply buffer
   * @param pos where the first option goes (normally `BootpOff.options`)
   * @param limit one past the last byte the message may use; the End option is kept room for
   */
  constructor(
    readonly buf: Uint8Array,
    public pos: number,
    private readonly limit: number = buf.length,
  ) {}

  /** Bytes still available for options (not counting the reserved End byte). */
  get remaining(): number {
    return this.limit - 1 - this.pos;
  }

  u8(code: number, v: number): boolean {
    if (this.remaining < 3) return false;
    this.header(code, 1);
    this.buf[this.pos++] = v & 0xff;
    return true;
  }

  u16(code: number, v: number): boolean {
    if (this.remaining < 4) return false;
    this.header(code, 2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return true;
  }

  u32(code: number, v: number): boolean {
    if (this.remaining < 6) return false;
    this.header(code, 4);
    writeIpv4(this.buf, this.pos, v >>> 0);
    this.pos += 4;
    return true;
  }

  ipv4(code: number, addr: Ipv4Addr): boolean {
    return this.u32(code, addr);
  }

  /** One option holding a list of addresses (3, 6, …); nothing is written for an empty list. */
  ipv4List(code: number, addrs: readonly Ipv4Addr[]): boolean {
    if (addrs.length === 0) return true;
    const len = addrs.length * 4;
    if (this.remaining < longOptionSize(len)) return false;
    // Lists longer than 63 addresses need splitting; write into place and let bytes() split.
    if (len > 255) {
      const tmp = new Uint8Array(len);
      addrs.forEach((a, i) => writeIpv4(tmp, i * 4, a));
      return this.bytes(code, tmp);
    }
    this.header(code, len);
    for (const a of addrs) { writeIpv4(this.buf, this.pos, a); this.pos += 4; }
    return true;
  }

  /**
   * Option `code` with `data`; data longer than `maxPiece` (255 by default) is split into
   * several instances of `code` (RFC 3396). `maxPiece` exists so tests can reproduce RFC
   * examples that split earlier.
   */
  bytes(code: number, data: Uint8Array, maxPiece = 255): boolean {
    if (this.remaining < longOptionSize(data.length, maxPiece)) return false;
    let off = 0;
    do {
      const n = Math.min(maxPiece, data.length - off);
      this.header(code, n);
      this.buf.set(data.subarray(off, off + n), this.pos);
      this.pos += n;
      off += n;
    } while (off < data.length);
    return true;
  }

  /** Writes the End option; the writer keeps room for it, so this always fits. */
  end(): void {
    this.buf[this.pos++] = DhcpOpt.end;
  }

  private header(code: number, len: number): void {
    this.buf[this.pos++] = code;
    this.buf[this.pos++] = len;
  }
}

/** Bytes an option with `len` bytes of data occupies on the wire, split per RFC 3396. */
export function longOptionSize(len: number, maxPiece = 255): number {
  const pieces = len === 0 ? 1 : Math.ceil(len / maxPiece);
  return len + 2 * pieces;
}

/** ASCII bytes of a string; undefined if it holds anything outside printable ASCII. */
export function asciiBytes(text: string): Uint8Array | undefined {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return undefined;
    out[i] = c;
  }
  return out;
}

/**
 * Encodes a domain search list as option 119 data (RFC 3397): each name in RFC 1035 label form,
 * with a compression pointer wherever a suffix was already written. Names may end with a dot.
 * Returns undefined for an invalid name (empty label, label > 63 bytes, name > 255 bytes,
 * non-ASCII) or when the data would put a suffix beyond the 14-bit pointer range.
 */
export function encodeDomainSearch(names: readonly string[]): Uint8Array | undefined {
  const out: number[] = [];
  const seen = new Map<string, number>(); // lower-cased suffix → offset of its first label
  for (const raw of names) {
    const name = raw.endsWith('.') ? raw.slice(0, -1) : raw;
    if (name.length === 0 || name.length > 253) return undefined;
    const labels = name.split('.');
    for (const l of labels) {
      if (l.length === 0 || l.length > 63 || asciiBytes(l) === undefined) return undefined;
    }
    let i = 0;
    for (; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase();
      const at = seen.get(suffix);
      if (at !== undefined) {
        out.push(0xc0 | (at >>> 8), at & 0xff);
        break;
      }
      if (out.length < 0x4000) seen.set(suffix, out.length);
      const label = labels[i]!;
      out.push(label.length);
      for (let k = 0; k < label.length; k++) out.push(label.charCodeAt(k));
    }
    if (i === labels.length) out.push(0);
  }
  return Uint8Array.from(out);
}

/**
 * Decodes option 119 data back to names (for tests and logs). Follows pointers backwards only,
 * so a malicious list cannot loop. Returns undefined when the data is not a valid list.
 */
export function decodeDomainSearch(data: Uint8Array): string[] | undefined {
  const names: string[] = [];
  let p = 0;
  while (p < data.length) {
    const labels: string[] = [];
    let q = p;
    let next = -1; // where the next name starts, once a pointer has been followed
    let limit = p; // pointers must point strictly before where they are found
    for (;;) {
      if (q >= data.length) return undefined;
      const len = data[q]!;
      if (len === 0) { if (next < 0) next = q + 1; break; }
      if ((len & 0xc0) === 0xc0) {
        if (q + 1 >= data.length) return undefined;
        const target = ((len & 0x3f) << 8) | data[q + 1]!;
        if (next < 0) next = q + 2;
        if (target >= limit) return undefined;
        limit = target;
        q = target;
        continue;
      }
      if ((len & 0xc0) !== 0 || q + 1 + len > data.length) return undefined;
      labels.push(String.fromCharCode(...data.subarray(q + 1, q + 1 + len)));
      q += 1 + len;
    }
    names.push(labels.join('.'));
    p = next;
  }
  return names;
}
