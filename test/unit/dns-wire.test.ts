/**
 * DNS wire views (src/dns/wire.ts), checked against dns-packet as an independent encoder/decoder.
 */
import { describe, expect, it } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import {
  buildHeaderError,
  buildResponse,
  encodeName,
  isTruncated,
  parseQuery,
  QType,
  Rcode,
  responseMatches,
  truncateResponse,
  type ParsedQuery,
} from '../../src/dns/wire.ts';

const enc = (p: Packet): Uint8Array => new Uint8Array(dnsPacket.encode(p));
const dec = (b: Uint8Array) => dnsPacket.decode(Buffer.from(b.buffer, b.byteOffset, b.length));

function query(name: string, type: 'A' | 'AAAA' | 'TXT' | 'MX' | 'PTR' = 'A', ednsSize?: number, id = 0x1234): Uint8Array {
  return enc({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: ednsSize === undefined ? [] : [{ type: 'OPT', name: '.', udpPayloadSize: ednsSize, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
  });
}

function ok(msg: Uint8Array): ParsedQuery {
  const r = parseQuery(msg);
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${r.kind}: ${r.reason}`);
  return r.query;
}

describe('parseQuery', () => {
  it('reads id, question (lower-cased) and the EDNS size of a dns-packet query', () => {
    const q = ok(query('WwW.Example.COM', 'AAAA', 4096, 0xbeef));
    expect(q).toMatchObject({ id: 0xbeef, opcode: 0, qname: 'www.example.com', qnameEscaped: false, qtype: QType.AAAA, qclass: 1 });
    expect(q.edns?.udpSize).toBe(4096);
    expect(q.questionEnd).toBe(12 + 17 + 4);
  });

  it('reports no EDNS when the query has no OPT record, and the root name as ""', () => {
    expect(ok(query('example.org')).edns).toBeUndefined();
    expect(ok(query('.', 'A')).qname).toBe('');
  });

  it('escapes dots and odd bytes inside labels, so such names cannot match a host name', () => {
    const msg = query('x.example');
    const bytes = new Uint8Array([...msg.subarray(0, 12), 3, 0x61, 0x2e, 0x20, 0, 0, 1, 0, 1]);
    const q = ok(bytes);
    expect(q.qname).toBe('a\\046\\032');
    expect(q.qnameEscaped).toBe(true);
  });

  it('drops what has no readable header, and responses', () => {
    expect(parseQuery(new Uint8Array(11)).kind).toBe('drop');
    const resp = query('example.org');
    resp[2]! |= 0x80;
    expect(parseQuery(resp).kind).toBe('drop');
  });

  it('answers FORMERR for bad bodies with the header still readable', () => {
    const good = query('example.org', 'A', 1232);
    const cases: Array<[string, Uint8Array]> = [];
    const noQ = good.slice(0, 12);
    noQ[5] = 0; // QDCOUNT 0
    cases.push(['qdcount 0', noQ]);
    const twoQ = good.slice();
    twoQ[5] = 2;
    cases.push(['qdcount 2', twoQ]);
    cases.push(['name cut', good.slice(0, 18)]);
    cases.push(['type cut', good.slice(0, 12 + 13 + 2)]);
    const ptr = new Uint8Array([...good.subarray(0, 12), 0xc0, 0x0c, 0, 1, 0, 1]);
    ptr[11] = 0;
    cases.push(['pointer in question', ptr]);
    cases.push(['opt cut', good.slice(0, good.length - 3)]);
    const longName = enc({ type: 'query', id: 1, questions: [{ type: 'A', name: `${'a'.repeat(63)}.`.repeat(4) + 'b' }] });
    cases.push(['name > 255', longName]);
    for (const [what, msg] of cases) {
      const r = parseQuery(msg);
      expect(r.kind, what).toBe('formerr');
      if (r.kind === 'formerr') expect(r.id, what).toBe(what === 'name > 255' ? 1 : 0x1234);
    }
  });

  it('rejects a second OPT record and an OPT outside the additional section', () => {
    const opt: Answer = { type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
    const two = enc({ type: 'query', id: 9, questions: [{ type: 'A', name: 'a.b' }], additionals: [opt, opt] });
    expect(parseQuery(two).kind).toBe('formerr');
    const inAnswer = enc({ type: 'query', id: 9, questions: [{ type: 'A', name: 'a.b' }], answers: [opt] });
    expect(parseQuery(inAnswer).kind).toBe('formerr');
  });

  it('answers NOTIMP for other opcodes', () => {
    const msg = query('example.org');
    msg[2] = (msg[2]! & 0x87) | (5 << 3); // UPDATE
    expect(parseQuery(msg)).toMatchObject({ kind: 'notimp', id: 0x1234 });
  });

  fcTest.prop([fc.uint8Array({ maxLength: 600 })], { numRuns: 3000 })('never throws on arbitrary bytes', (bytes) => {
    const r = parseQuery(bytes);
    expect(['ok', 'drop', 'formerr', 'notimp']).toContain(r.kind);
    if (r.kind === 'ok') expect(r.query.questionEnd).toBeLessThanOrEqual(bytes.length);
  });

  fcTest.prop([fc.integer({ min: 12, max: 40 }), fc.uint8Array({ minLength: 1, maxLength: 8 })], { numRuns: 2000 })(
    'never throws on a valid query with bytes overwritten',
    (at, junk) => {
      const msg = query('host.example.net', 'MX', 1400);
      msg.set(junk.subarray(0, Math.max(0, msg.length - at)), Math.min(at, msg.length));
      expect(() => parseQuery(msg)).not.toThrow();
    },
  );
});

describe('responseMatches', () => {
  const q = query('Example.org', 'A', undefined, 7);
  const qEnd = ok(q).questionEnd;
  const answer = (name: string, rcode = 0, questions = true): Uint8Array =>
    enc({ type: 'response', id: 7, flags: rcode, questions: questions ? [{ type: 'A', name }] : [], answers: [] });

  it('accepts the same question in any letter case', () => {
    expect(responseMatches(answer('eXAMPLE.ORG'), q, qEnd)).toBe(true);
  });
  it('rejects another name, another type, a query (QR clear) and short messages', () => {
    expect(responseMatches(answer('example.com'), q, qEnd)).toBe(false);
    expect(responseMatches(enc({ type: 'response', id: 7, questions: [{ type: 'AAAA', name: 'example.org' }] }), q, qEnd)).toBe(false);
    expect(responseMatches(q, q, qEnd)).toBe(false);
    expect(responseMatches(answer('example.org').subarray(0, 20), q, qEnd)).toBe(false);
  });
  it('accepts a question-less answer only as an error', () => {
    expect(responseMatches(answer('', Rcode.FORMERR, false), q, qEnd)).toBe(true);
    expect(responseMatches(answer('', Rcode.NOERROR, false), q, qEnd)).toBe(false);
  });
});

describe('buildResponse', () => {
  it('echoes id, RD and the question verbatim, with answers pointing at it and an OPT', () => {
    const msg = query('Host.Local', 'A', 4096, 0x4242);
    const q = ok(msg);
    const out = buildResponse(msg, q, Rcode.NOERROR, [
      { type: QType.A, ttl: 60, rdata: Uint8Array.of(10, 0, 2, 99) },
      { type: QType.A, ttl: 60, rdata: Uint8Array.of(10, 0, 2, 100) },
    ], 1232);
    expect(out.subarray(12, q.questionEnd)).toEqual(msg.subarray(12, q.questionEnd));
    const d = dec(out);
    expect(d).toMatchObject({ id: 0x4242, type: 'response', flag_rd: true, flag_ra: true, flag_tc: false, rcode: 'NOERROR' });
    expect(d.questions).toEqual([{ name: 'Host.Local', type: 'A', class: 'IN' }]);
    expect(d.answers?.map((a) => [a.name, a.type, 'ttl' in a ? a.ttl : undefined, 'data' in a ? a.data : undefined])).toEqual([
      ['Host.Local', 'A', 60, '10.0.2.99'],
      ['Host.Local', 'A', 60, '10.0.2.100'],
    ]);
    const opt = d.additionals?.[0];
    expect(opt?.type).toBe('OPT');
    expect(opt && 'udpPayloadSize' in opt ? opt.udpPayloadSize : 0).toBe(1232);
  });

  it('carries the rcode, and PTR names from encodeName', () => {
    const msg = query('5.2.0.10.in-addr.arpa', 'PTR');
    const out = buildResponse(msg, ok(msg), Rcode.NOERROR, [{ type: QType.PTR, ttl: 0, rdata: encodeName('box.lan') }], 1232);
    expect(dec(out).answers?.[0]).toMatchObject({ type: 'PTR', data: 'box.lan' });
    const nx = buildResponse(msg, ok(msg), Rcode.NXDOMAIN, [], 1232);
    expect(dec(nx)).toMatchObject({ rcode: 'NXDOMAIN', answers: [], additionals: [] });
  });

  it('makes header-only FORMERR/NOTIMP answers with the id and opcode kept', () => {
    const out = buildHeaderError(0x0102, 0x2900 /* opcode 5, RD */, Rcode.NOTIMP);
    expect(out.length).toBe(12);
    expect(dec(out)).toMatchObject({ id: 0x0102, opcode: 'UPDATE', rcode: 'NOTIMP', flag_qr: true, flag_rd: true });
  });
});

describe('truncateResponse', () => {
  function bigAnswer(n: number, edns: boolean, extra = 0): Uint8Array {
    const answers: Answer[] = [];
    for (let i = 0; i < n; i++) answers.push({ type: 'A', name: 'many.example', ttl: 300, data: `10.1.${i >> 8}.${i & 255}` });
    const additionals: Answer[] = [];
    for (let i = 0; i < extra; i++) additionals.push({ type: 'AAAA', name: `ns${i}.example`, ttl: 1, data: '2001:db8::1' });
    if (edns) additionals.push({ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] });
    return enc({ type: 'response', id: 3, flags: dnsPacket.RECURSION_AVAILABLE, questions: [{ type: 'A', name: 'many.example' }], answers, additionals });
  }

  it('returns a message that fits unchanged', () => {
    const m = bigAnswer(3, false);
    expect(truncateResponse(m, 512)).toBe(m);
  });

  it('keeps the records that fit, sets TC, keeps OPT, and stays decodable', () => {
    const m = bigAnswer(100, true);
    expect(m.length).toBeGreaterThan(512);
    const t = truncateResponse(m, 512);
    expect(t.length).toBeLessThanOrEqual(512);
    expect(isTruncated(t)).toBe(true);
    const d = dec(t);
    // dns-packet does not compress: each A record is name (14) + 10 + 4 bytes; header 12,
    // question 18, OPT 11.
    expect(d.answers!.length).toBe(Math.floor((512 - 12 - 18 - 11) / 28));
    expect(d.answers!.map((a) => ('data' in a ? a.data : ''))).toEqual(dec(m).answers!.slice(0, d.answers!.length).map((a) => ('data' in a ? a.data : '')));
    expect(d.additionals!.map((a) => a.type)).toEqual(['OPT']);
  });

  it('drops additional records without setting TC (RFC 2181 §9)', () => {
    const m = bigAnswer(2, false, 20);
    const t = truncateResponse(m, 512);
    expect(isTruncated(t)).toBe(false);
    const d = dec(t);
    expect(d.answers!.length).toBe(2);
    expect(d.additionals!.length).toBeGreaterThan(0);
    expect(d.additionals!.length).toBeLessThan(20);
  });

  it('keeps compression pointers valid (a prefix of the records)', () => {
    // A hand-compressed answer: every owner name a pointer to the question.
    const q = query('c.example', 'A', undefined, 5);
    const qq = ok(q);
    const answers = Array.from({ length: 60 }, (_, i) => ({ type: QType.A, ttl: 1, rdata: Uint8Array.of(10, 9, 0, i) }));
    const m = buildResponse(q, qq, Rcode.NOERROR, answers, 1232);
    const t = truncateResponse(m, 512);
    const d = dec(t);
    expect(d.answers!.every((a) => a.name === 'c.example')).toBe(true);
    expect(d.answers!.length).toBe(Math.floor((512 - qq.questionEnd) / 16));
  });

  fcTest.prop([fc.uint8Array({ minLength: 513, maxLength: 1500 }), fc.integer({ min: 512, max: 1400 })], { numRuns: 2000 })(
    'never throws and always fits, whatever the bytes',
    (bytes, limit) => {
      const t = truncateResponse(bytes, limit);
      expect(t.length).toBeLessThanOrEqual(Math.max(limit, bytes.length <= limit ? bytes.length : 0));
    },
  );

  fcTest.prop([fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 40 }), fc.boolean(), fc.integer({ min: 512, max: 2000 })], { numRuns: 300 })(
    'dns-packet decodes every truncation of a valid answer, with TC exactly when answers were lost',
    (n, extra, edns, limit) => {
      const m = bigAnswer(n, edns, extra);
      const t = truncateResponse(m, limit);
      expect(t.length).toBeLessThanOrEqual(Math.max(limit, m.length <= limit ? m.length : 0));
      const d = dec(t);
      expect(d.flag_tc).toBe(d.answers!.length < n);
      expect(d.additionals!.some((a) => a.type === 'OPT')).toBe(edns);
    },
  );
});
