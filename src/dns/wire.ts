/**
 * DNS message views for the forwarder: just enough of RFC 1035/6891 to forward transparently.
 *
 * Theory of operation: the forwarder passes the guest's query bytes upstream and the upstream's
 * answer bytes back, touching only the 16-bit id (and, for UDP guests, the advertised EDNS size).
 * Unknown record types, EDNS options and DNSSEC records therefore survive byte for byte. What it
 * has to understand is small and lives here:
 *   - `parseQuery`: header, the single question (RFC 9619: QDCOUNT must be 1) and the OPT record,
 *     with every length checked before it is read. It never throws: a message whose header is
 *     unreadable is `drop`, a readable header with a bad body is `formerr`, another opcode is
 *     `notimp`.
 *   - `responseMatches`: an upstream answer is accepted only if its question equals ours
 *     (case-insensitive, RFC 4343), so a stray or forged packet with a guessed id is not enough.
 *   - `truncateResponse`: fits an answer into the guest's UDP size. It keeps a *prefix* of the
 *     records (so every compression pointer, which always points backwards, stays valid), sets TC
 *     when an answer or authority record had to go (RFC 2181 §9: not for dropped additional
 *     records), and keeps the OPT record.
 *   - `buildResponse`: local answers (hosts table, host mode, SERVFAIL/FORMERR) built directly as
 *     bytes: the question is echoed verbatim (its case too, for 0x20-randomising stubs) and answer
 *     names are a pointer to it.
 *
 * Why not dns-packet here: it decodes by throwing on bad input (guest input must not throw), it
 * re-encodes rather than forwarding unknown data verbatim, it never compresses names, and it has no
 * truncation. The tests use it as an independent encoder/decoder.
 */

export const HEADER_LEN = 12;
/** RFC 1035 §4.2.1: the UDP payload limit without EDNS. */
export const MIN_UDP_SIZE = 512;

export const Rcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export const QType = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41, ANY: 255 } as const;
export const QClass = { IN: 1 } as const;

const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const FLAG_CD = 0x0010;

export interface EdnsInfo {
  /** Advertised UDP payload size as sent (may be below 512; callers clamp). */
  udpSize: number;
  /** Offset of the OPT record's CLASS field (the UDP size), for in-place rewriting. */
  sizeOffset: number;
  version: number;
}

export interface ParsedQuery {
  id: number;
  /** Header bytes 2..3 as sent. */
  flags: number;
  opcode: number;
  /** Offset just past the question section: bytes [12, questionEnd) are the question. */
  questionEnd: number;
  /** Presentation form, lower-case, no trailing dot ('' for the root). Odd bytes are \DDD escaped. */
  qname: string;
  /** True when qname needed escapes (a dot, backslash or non-printable byte inside a label). */
  qnameEscaped: boolean;
  qtype: number;
  qclass: number;
  edns: EdnsInfo | undefined;
}

export type QueryParse =
  | { kind: 'ok'; query: ParsedQuery }
  | { kind: 'drop'; reason: string }
  | { kind: 'formerr' | 'notimp'; reason: string; id: number; flags: number };

export function readU16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

export function writeU16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

export function readId(msg: Uint8Array): number {
  return readU16(msg, 0);
}

export function writeId(msg: Uint8Array, id: number): void {
  writeU16(msg, 0, id);
}

export function rcodeOf(msg: Uint8Array): number {
  return msg[3]! & 0x0f;
}

export function isTruncated(msg: Uint8Array): boolean {
  return (readU16(msg, 2) & FLAG_TC) !== 0;
}

/**
 * Offset just past the (possibly compressed) name at `off`, or -1 if it runs past the end or uses
 * a reserved label type. Pointers end the name here, so no loop is possible.
 */
export function skipName(buf: Uint8Array, off: number): number {
  let p = off;
  for (let guard = 0; guard < 128; guard++) {
    if (p >= buf.length) return -1;
    const len = buf[p]!;
    if (len === 0) return p + 1;
    const kind = len & 0xc0;
    if (kind === 0xc0) return p + 2 <= buf.length ? p + 2 : -1;
    if (kind !== 0) return -1; // 0x40/0x80: extended/reserved label types (RFC 6891 §5)
    p += 1 + len;
  }
  return -1; // more than 127 labels cannot fit in 255 bytes
}

/** Offset just past the resource record at `off`, or -1 if it does not fit. */
export function skipRecord(buf: Uint8Array, off: number): number {
  const p = skipName(buf, off);
  if (p < 0 || p + 10 > buf.length) return -1;
  const end = p + 10 + readU16(buf, p + 8);
  return end <= buf.length ? end : -1;
}

const HEX = '0123456789';
function escapeByte(b: number): string {
  return '\\' + HEX[Math.floor(b / 100)]! + HEX[Math.floor(b / 10) % 10]! + HEX[b % 10]!;
}

/** Parses a guest query. Never throws; see QueryParse for the outcomes. */
export function parseQuery(msg: Uint8Array): QueryParse {
  if (msg.length < HEADER_LEN) return { kind: 'drop', reason: 'shorter than a DNS header' };
  const id = readId(msg);
  const flags = readU16(msg, 2);
  // Answering a response could ping-pong between two forwarders; real servers drop these.
  if (flags & FLAG_QR) return { kind: 'drop', reason: 'QR set (a response, not a query)' };
  const opcode = (flags >>> 11) & 0x0f;
  if (opcode !== 0) return { kind: 'notimp', reason: `opcode ${opcode}`, id, flags };
  const qdcount = readU16(msg, 4);
  if (qdcount !== 1) return { kind: 'formerr', reason: `QDCOUNT ${qdcount}`, id, flags };

  // The question name: uncompressed (a pointer here could only point into the header).
  let p = HEADER_LEN;
  let qname = '';
  let escaped = false;
  let wireLen = 0;
  for (;;) {
    if (p >= msg.length) return { kind: 'formerr', reason: 'question name truncated', id, flags };
    const len = msg[p]!;
    if (len === 0) {
      p += 1;
      break;
    }
    if (len & 0xc0) return { kind: 'formerr', reason: 'compressed or reserved label in question', id, flags };
    wireLen += 1 + len;
    if (wireLen + 1 > 255) return { kind: 'formerr', reason: 'question name longer than 255 bytes', id, flags };
    if (p + 1 + len > msg.length) return { kind: 'formerr', reason: 'question name truncated', id, flags };
    if (qname.length > 0) qname += '.';
    for (let i = p + 1; i <= p + len; i++) {
      let c = msg[i]!;
      if (c >= 0x41 && c <= 0x5a) c += 0x20; // ASCII lower-case only (RFC 4343)
      if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) {
        qname += escapeByte(c);
        escaped = true;
      } else {
        qname += String.fromCharCode(c);
      }
    }
    p += 1 + len;
  }
  if (p + 4 > msg.length) return { kind: 'formerr', reason: 'question type/class truncated', id, flags };
  const qtype = readU16(msg, p);
  const qclass = readU16(msg, p + 2);
  const questionEnd = p + 4;

  // Walk the remaining sections to find the OPT record; every record must fit.
  const records = readU16(msg, 6) + readU16(msg, 8) + readU16(msg, 10);
  const additionalStart = readU16(msg, 6) + readU16(msg, 8);
  let edns: EdnsInfo | undefined;
  p = questionEnd;
  for (let i = 0; i < records; i++) {
    const nameEnd = skipName(msg, p);
    const end = skipRecord(msg, p);
    if (end < 0 || nameEnd < 0) return { kind: 'formerr', reason: `record ${i} truncated`, id, flags };
    if (readU16(msg, nameEnd) === QType.OPT) {
      // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
      if (i < additionalStart || edns || nameEnd !== p + 1) return { kind: 'formerr', reason: 'misplaced or repeated OPT', id, flags };
      edns = { udpSize: readU16(msg, nameEnd + 2), sizeOffset: nameEnd + 2, version: msg[nameEnd + 5]! };
    }
    p = end;
  }
  // Trailing bytes after the last record are tolerated (and forwarded): some stubs pad.
  return {
    kind: 'ok',
    query: { id, flags, opcode, questionEnd, qname, qnameEscaped: escaped, qtype, qclass, edns },
  };
}

function foldAscii(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
}

/**
 * True when `resp` is a well-formed-enough answer to `query` (whose question is
 * [12, questionEnd)): QR set, same opcode, and the same question compared case-insensitively. An
 * answer without a question is accepted only as an error (FORMERR/NOTIMP/... from an upstream that
 * could not parse ours).
 */
export function responseMatches(resp: Uint8Array, query: Uint8Array, questionEnd: number): boolean {
  if (resp.length < HEADER_LEN) return false;
  const flags = readU16(resp, 2);
  if (!(flags & FLAG_QR)) return false;
  if (((flags >>> 11) & 0x0f) !== ((readU16(query, 2) >>> 11) & 0x0f)) return false;
  const qd = readU16(resp, 4);
  if (qd === 0) return (flags & 0x0f) !== Rcode.NOERROR;
  if (qd !== 1 || resp.length < questionEnd) return false;
  for (let i = HEADER_LEN; i < questionEnd; i++) {
    if (foldAscii(resp[i]!) !== foldAscii(query[i]!)) return false;
  }
  return true;
}

/**
 * Returns `resp` itself if it fits `limit` bytes, else a new message that does: header and
 * question, then the longest prefix of answer+authority records that fits (TC set if any was
 * dropped), then additional records while they fit (no TC for those), then the OPT record. A
 * response too damaged to walk is cut to header + question with TC. `limit` must be >= 512.
 */
export function truncateResponse(resp: Uint8Array, limit: number): Uint8Array {
  if (resp.length <= limit) return resp;
  const qd = readU16(resp, 4);
  const counts = [readU16(resp, 6), readU16(resp, 8), readU16(resp, 10)] as const;
  let p = HEADER_LEN;
  for (let i = 0; i < qd && p >= 0; i++) {
    const nameEnd = skipName(resp, p);
    p = nameEnd < 0 ? -1 : nameEnd + 4;
  }
  if (p < 0 || p > resp.length || p > limit) {
    // Cannot even keep the question: header only, TC (the guest retries over TCP).
    const out = resp.slice(0, HEADER_LEN);
    writeU16(out, 2, readU16(out, 2) | FLAG_TC);
    out.fill(0, 4, HEADER_LEN);
    return out;
  }
  const questionEnd = p;
  // Record boundaries in order; a damaged tail just ends the walk (and forces TC below).
  const bounds: Array<{ start: number; end: number; section: number; opt: boolean }> = [];
  let damaged = false;
  walk: for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const nameEnd = skipName(resp, p);
      const end = skipRecord(resp, p);
      if (end < 0 || nameEnd < 0) {
        damaged = true;
        break walk;
      }
      bounds.push({ start: p, end, section: s, opt: readU16(resp, nameEnd) === QType.OPT });
      p = end;
    }
  }
  // The OPT record (extended rcode, options) is kept unless it alone would overflow.
  const optFound = bounds.find((b) => b.opt);
  const opt = optFound && questionEnd + (optFound.end - optFound.start) <= limit ? optFound : undefined;
  const budget = limit - (opt ? opt.end - opt.start : 0);
  const out = new Uint8Array(limit);
  out.set(resp.subarray(0, questionEnd), 0);
  let w = questionEnd;
  const kept = [0, 0, 0];
  // A damaged message is cut where the damage starts and marked TC: the guest's TCP retry then
  // gets whatever the upstream really sends rather than our guess.
  let tc = damaged;
  for (const b of bounds) {
    if (b.opt) continue;
    const len = b.end - b.start;
    if (w + len > budget) {
      if (b.section < 2) tc = true;
      break;
    }
    out.set(resp.subarray(b.start, b.end), w);
    w += len;
    kept[b.section]!++;
  }
  if (opt) {
    out.set(resp.subarray(opt.start, opt.end), w);
    w += opt.end - opt.start;
    kept[2]!++;
  }
  writeU16(out, 2, readU16(out, 2) | (tc ? FLAG_TC : 0));
  writeU16(out, 6, kept[0]!);
  writeU16(out, 8, kept[1]!);
  writeU16(out, 10, kept[2]!);
  return out.subarray(0, w);
}

/** One answer record of a local response; its owner name is the question's (a pointer to it). */
export interface LocalAnswer {
  type: number;
  ttl: number;
  rdata: Uint8Array;
}

/**
 * A response to `q` built from scratch: header (id, opcode, RD and CD echoed; RA set), the
 * question copied from `queryMsg`, `answers`, and an OPT record advertising `ednsSize` if the query
 * had one (RFC 6891 §7).
 */
export function buildResponse(
  queryMsg: Uint8Array,
  q: ParsedQuery,
  rcode: number,
  answers: readonly LocalAnswer[],
  ednsSize: number,
): Uint8Array {
  let len = q.questionEnd + (q.edns ? 11 : 0);
  for (const a of answers) len += 12 + a.rdata.length;
  const out = new Uint8Array(len);
  writeId(out, q.id);
  writeU16(out, 2, FLAG_QR | (q.opcode << 11) | (q.flags & (FLAG_RD | FLAG_CD)) | FLAG_RA | (rcode & 0x0f));
  writeU16(out, 4, 1);
  writeU16(out, 6, answers.length);
  writeU16(out, 10, q.edns ? 1 : 0);
  out.set(queryMsg.subarray(HEADER_LEN, q.questionEnd), HEADER_LEN);
  let w = q.questionEnd;
  for (const a of answers) {
    writeU16(out, w, 0xc000 | HEADER_LEN);
    writeU16(out, w + 2, a.type);
    writeU16(out, w + 4, q.qclass);
    writeU16(out, w + 6, (a.ttl >>> 16) & 0xffff);
    writeU16(out, w + 8, a.ttl & 0xffff);
    writeU16(out, w + 10, a.rdata.length);
    out.set(a.rdata, w + 12);
    w += 12 + a.rdata.length;
  }
  if (q.edns) {
    out[w] = 0; // root owner
    writeU16(out, w + 1, QType.OPT);
    writeU16(out, w + 3, ednsSize);
    // extended rcode, version 0, flags 0 (no DO: we add no DNSSEC data), no options
  }
  return out;
}

/** A header-only error response (FORMERR, NOTIMP) for a query whose body could not be used. */
export function buildHeaderError(id: number, queryFlags: number, rcode: number): Uint8Array {
  const out = new Uint8Array(HEADER_LEN);
  writeId(out, id);
  writeU16(out, 2, FLAG_QR | (queryFlags & (0x7800 | FLAG_RD | FLAG_CD)) | FLAG_RA | (rcode & 0x0f));
  return out;
}

/** Encodes presentation-form `name` (no escapes; labels 1..63) as uncompressed wire labels. */
export function encodeName(name: string): Uint8Array {
  const labels = name === '' ? [] : name.split('.');
  let len = 1;
  for (const l of labels) len += 1 + l.length;
  const out = new Uint8Array(len);
  let w = 0;
  for (const l of labels) {
    out[w++] = l.length;
    for (let i = 0; i < l.length; i++) out[w++] = l.charCodeAt(i) & 0xff;
  }
  out[w] = 0;
  return out;
}
