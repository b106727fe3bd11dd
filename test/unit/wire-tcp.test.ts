import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  TCP_HLEN,
  TcpFlag,
  TcpView,
  createTcpOptions,
  parseTcpOptions,
  tcpSynOptionsLen,
  writeTcp,
  writeTcpOptionsSack,
  writeTcpOptionsSyn,
  writeTcpOptionsTimestamp,
  type TcpSynOptions,
} from '../../src/stack/wire/tcp.ts';
import { IPV4_DF, IpProto, Ipv4View, writeIpv4 } from '../../src/stack/wire/ipv4.ts';
import { EtherType, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { foldChecksum, pseudoHeaderSum, sumBytes } from '../../src/stack/wire/checksum.ts';
import { IP_A, IP_B, MAC_A, MAC_B, TCP_ACK, TCP_DATA, TCP_RST_ACK, TCP_SYN, TCP_SYN_ACK, a5, guarded, hex, toHex } from './wire-captures.ts';

function tcp(frame: Uint8Array): TcpView {
  const ip = Ipv4View.checked(frame, 14, frame.length - 14);
  if (typeof ip === 'string') throw new Error(ip);
  const v = TcpView.checked(frame, ip.payloadOff, ip.payloadLen, ip.src, ip.dst);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

/** A bare segment (header + given options, no payload) with a valid checksum, for option tests. */
function segmentWithOptions(options: Uint8Array): TcpView {
  const buf = a5(TCP_HLEN + options.length);
  buf.set(options, TCP_HLEN);
  writeTcp(buf, 0, 1, 2, 3, 4, TcpFlag.ACK, 5, options.length, 0, IP_A, IP_B);
  const v = TcpView.checked(buf, 0, buf.length, IP_A, IP_B);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

describe('TcpView', () => {
  it('decodes the captured SYN and its options (mss 1460, sackOK, TS, wscale 10)', () => {
    const v = tcp(TCP_SYN);
    expect([v.srcPort, v.dstPort, v.seq, v.ack]).toEqual([0xacc2, 8080, 0x108868e0, 0]);
    expect([v.dataOff, v.flags, v.window, v.checksum, v.urgent]).toEqual([40, TcpFlag.SYN, 64240, 0x30a1, 0]);
    expect([v.optionsOff, v.optionsLen, v.payloadOff, v.payloadLen]).toEqual([54, 20, 74, 0]);
    expect(v.hasFlags(TcpFlag.SYN)).toBe(true);
    expect(v.hasFlags(TcpFlag.SYN | TcpFlag.ACK)).toBe(false);
    const o = createTcpOptions();
    expect(parseTcpOptions(v, o)).toBe(true);
    expect([o.mss, o.windowScale, o.sackPermitted, o.sackCount]).toEqual([1460, 10, true, 0]);
    expect(o.timestamp).toEqual({ tsVal: 0xc9b7f82f, tsEcr: 0 });
  });

  it('decodes the captured SYN-ACK, ACK, data and RST segments', () => {
    const sa = tcp(TCP_SYN_ACK);
    expect([sa.seq, sa.ack, sa.flags, sa.window]).toEqual([0xc01f74a4, 0x108868e1, TcpFlag.SYN | TcpFlag.ACK, 65160]);
    const o = createTcpOptions();
    expect(parseTcpOptions(sa, o)).toBe(true);
    expect(o.timestamp).toEqual({ tsVal: 0xd38b4cea, tsEcr: 0xc9b7f82f });

    const ack = tcp(TCP_ACK);
    expect([ack.flags, ack.window, ack.dataOff, ack.payloadLen]).toEqual([TcpFlag.ACK, 63, 32, 0]);
    expect(parseTcpOptions(ack, o)).toBe(true);
    expect([o.mss, o.windowScale, o.sackPermitted]).toEqual([undefined, undefined, false]);

    const data = tcp(TCP_DATA);
    expect(data.flags).toBe(TcpFlag.PSH | TcpFlag.ACK);
    expect(new TextDecoder().decode(TCP_DATA.subarray(data.payloadOff, data.payloadOff + data.payloadLen))).toBe('hello\n');

    const rst = tcp(TCP_RST_ACK);
    expect([rst.seq, rst.ack, rst.flags, rst.window, rst.dataOff]).toEqual([0, 0x9de0e6f3, TcpFlag.RST | TcpFlag.ACK, 0, 20]);
    // Reusing the same record: everything from the previous parse is reset.
    expect(parseTcpOptions(rst, o)).toBe(true);
    expect([o.mss, o.windowScale, o.sackPermitted, o.timestamp, o.sackCount]).toEqual([undefined, undefined, false, undefined, 0]);
  });

  it('emits the captured SYN, SYN-ACK, data and RST frames byte for byte', () => {
    const frames: {
      frame: Uint8Array; dst: number; src: number; ident: number; sIp: number; dIp: number; sp: number; dp: number;
      seq: number; ack: number; flags: number; win: number; syn?: TcpSynOptions; ts?: [number, number]; payload?: string;
    }[] = [
      { frame: TCP_SYN, dst: MAC_B, src: MAC_A, ident: 0xe003, sIp: IP_A, dIp: IP_B, sp: 0xacc2, dp: 8080, seq: 0x108868e0, ack: 0,
        flags: TcpFlag.SYN, win: 64240, syn: { mss: 1460, sackPermitted: true, timestamp: { tsVal: 0xc9b7f82f, tsEcr: 0 }, windowScale: 10 } },
      { frame: TCP_SYN_ACK, dst: MAC_A, src: MAC_B, ident: 0, sIp: IP_B, dIp: IP_A, sp: 8080, dp: 0xacc2, seq: 0xc01f74a4, ack: 0x108868e1,
        flags: TcpFlag.SYN | TcpFlag.ACK, win: 65160, syn: { mss: 1460, sackPermitted: true, timestamp: { tsVal: 0xd38b4cea, tsEcr: 0xc9b7f82f }, windowScale: 10 } },
      { frame: TCP_DATA, dst: MAC_B, src: MAC_A, ident: 0xe005, sIp: IP_A, dIp: IP_B, sp: 0xacc2, dp: 8080, seq: 0x108868e1, ack: 0xc01f74a5,
        flags: TcpFlag.PSH | TcpFlag.ACK, win: 63, ts: [0xc9b7f82f, 0xd38b4cea], payload: 'hello\n' },
      { frame: TCP_RST_ACK, dst: MAC_A, src: MAC_B, ident: 0, sIp: IP_B, dIp: IP_A, sp: 0x1f91, dp: 0xd262, seq: 0, ack: 0x9de0e6f3,
        flags: TcpFlag.RST | TcpFlag.ACK, win: 0 },
    ];
    for (const f of frames) {
      const out = a5(f.frame.length + 2);
      const tcpOff = 14 + 20;
      let optEnd = tcpOff + TCP_HLEN;
      if (f.syn) {
        optEnd = writeTcpOptionsSyn(out, optEnd, f.syn);
        expect(optEnd - tcpOff - TCP_HLEN).toBe(tcpSynOptionsLen(f.syn));
      }
      if (f.ts) optEnd = writeTcpOptionsTimestamp(out, optEnd, f.ts[0], f.ts[1]);
      const payload = new TextEncoder().encode(f.payload ?? '');
      out.set(payload, optEnd);
      const optionsLen = optEnd - tcpOff - TCP_HLEN;
      const tcpLen = TCP_HLEN + optionsLen + payload.length;
      let o = writeEthernet(out, 0, f.dst, f.src, EtherType.IPv4);
      o = writeIpv4(out, o, 20 + tcpLen, f.ident, IPV4_DF, 64, IpProto.TCP, f.sIp, f.dIp);
      o = writeTcp(out, o, f.sp, f.dp, f.seq, f.ack, f.flags, f.win, optionsLen, payload.length, f.sIp, f.dIp);
      expect(o).toBe(f.frame.length);
      expect(toHex(out.subarray(0, o))).toBe(toHex(f.frame));
      expect(toHex(out.subarray(o))).toBe('a5a5');
    }
  });

  it('parse(emit(x)) is the identity for headers and SYN options', () => {
    const u32 = fc.nat(0xffffffff);
    fc.assert(
      fc.property(
        fc.record({
          sp: fc.nat(0xffff), dp: fc.nat(0xffff), seq: u32, ack: u32, flags: fc.nat(255), win: fc.nat(0xffff),
          mss: fc.nat(0xffff), ws: fc.option(fc.nat(14), { nil: undefined }), sack: fc.boolean(),
          ts: fc.option(fc.record({ tsVal: u32, tsEcr: u32 }), { nil: undefined }),
          payload: fc.uint8Array({ maxLength: 64 }),
        }),
        (x) => {
          const syn: TcpSynOptions = { mss: x.mss, windowScale: x.ws, sackPermitted: x.sack, timestamp: x.ts };
          const optLen = tcpSynOptionsLen(syn);
          expect(optLen % 4).toBe(0);
          const buf = a5(TCP_HLEN + optLen + x.payload.length);
          expect(writeTcpOptionsSyn(buf, TCP_HLEN, syn)).toBe(TCP_HLEN + optLen);
          buf.set(x.payload, TCP_HLEN + optLen);
          expect(writeTcp(buf, 0, x.sp, x.dp, x.seq, x.ack, x.flags, x.win, optLen, x.payload.length, IP_B, IP_A)).toBe(buf.length);
          const v = TcpView.checked(buf, 0, buf.length, IP_B, IP_A);
          if (typeof v === 'string') throw new Error(v);
          expect([v.srcPort, v.dstPort, v.seq, v.ack, v.flags, v.window, v.urgent, v.optionsLen, v.payloadLen]).toEqual([
            x.sp, x.dp, x.seq, x.ack, x.flags, x.win, 0, optLen, x.payload.length,
          ]);
          const o = createTcpOptions();
          expect(parseTcpOptions(v, o)).toBe(true);
          expect([o.mss, o.windowScale, o.sackPermitted, o.timestamp]).toEqual([x.mss, x.ws, x.sack, x.ts]);
        },
      ),
    );
  });

  it('round-trips timestamp + SACK options (hand-made: the capture had no loss)', () => {
    const blocks = new Uint32Array([100, 200, 0xfffffff0, 0x10, 5000, 6000, 7, 8]);
    for (let count = 1; count <= 3; count++) {
      const opts = a5(40);
      let e = writeTcpOptionsTimestamp(opts, 0, 11, 22);
      e = writeTcpOptionsSack(opts, e, blocks, count);
      expect(e).toBe(12 + 4 + 8 * count);
      const v = segmentWithOptions(opts.subarray(0, e));
      const o = createTcpOptions();
      expect(parseTcpOptions(v, o)).toBe(true);
      expect(o.timestamp).toEqual({ tsVal: 11, tsEcr: 22 });
      expect(o.sackCount).toBe(count);
      expect([...o.sackBlocks.subarray(0, 2 * count)]).toEqual([...blocks.subarray(0, 2 * count)]);
    }
    const four = a5(36);
    expect(writeTcpOptionsSack(four, 0, blocks, 4)).toBe(36);
    const o = createTcpOptions();
    expect(parseTcpOptions(segmentWithOptions(four), o)).toBe(true);
    expect(o.sackCount).toBe(4);
    expect(() => writeTcpOptionsSack(four, 0, blocks, 5)).toThrow(RangeError);
  });

  it('parseTcpOptions: malformed lists are rejected, unknown options skipped, EOL ends the list', () => {
    const o = createTcpOptions();
    const parse = (h: string) => parseTcpOptions(segmentWithOptions(hex(h)), o);
    expect(parse('02040578')).toBe(true); // MSS 1400
    expect(o.mss).toBe(1400);
    expect(parse('1e0400000101010101010101')).toBe(true); // unknown kind 30 (MPTCP), length 4: skipped
    expect(parse('0000ffff')).toBe(true); // EOL: the rest is padding, even if it is garbage
    expect(parse('01010303')).toBe(false); // WS whose length runs past the header
    expect(parse('02000000')).toBe(false); // length 0
    expect(parse('02010000')).toBe(false); // length 1
    expect(parse('02030000')).toBe(false); // MSS with length 3
    expect(parse('0402040300000000')).toBe(false); // a valid SACK-permitted, then one with length 3
    expect(parse('0101050c000000010000000200000101')).toBe(false); // SACK with length 12 (not 2 + 8n)
    expect(parse('010108080000000000000000')).toBe(false); // TS with length 8
    expect(parse('01010101')).toBe(true);
    expect(parse('0303ff01')).toBe(true); // window scale 255 clamped to 14 (RFC 7323 §2.3)
    expect(o.windowScale).toBe(14);
    expect(parse('010101ff')).toBe(false); // a kind with no room for its length byte
  });

  it('truncation: a string reason at every shorter length, never a throw', () => {
    for (const frame of [TCP_SYN, TCP_DATA, TCP_RST_ACK]) {
      const v = tcp(frame);
      const segLen = v.dataOff + v.payloadLen;
      for (let len = 0; len < segLen; len++) {
        const r = TcpView.checked(frame, 34, len, IP_A, IP_B);
        if (len < TCP_HLEN) expect(r).toBe('truncated');
        else if (len < v.dataOff) expect(r).toBe('badDataOffset');
        else expect(r).toBe('badChecksum');
      }
    }
  });

  it('rejects data offsets below 20 and a corrupted checksum', () => {
    const b = TCP_RST_ACK.slice(34);
    b[12] = 0x40; // 16 bytes
    expect(TcpView.checked(b, 0, b.length, IP_B, IP_A)).toBe('badDataOffset');
    const c = TCP_RST_ACK.slice(34);
    c[14] = 1; // window
    expect(TcpView.checked(c, 0, c.length, IP_B, IP_A)).toBe('badChecksum');
  });

  it('arbitrary bytes never throw, and getters and the option parser stay inside the range', () => {
    let views = 0;
    let parsed = 0;
    const o = createTcpOptions();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100, size: 'max' }), fc.nat(15), fc.nat(3), fc.nat(6), (bytes, doff, repair, pad) => {
        if (repair > 0 && bytes.length >= TCP_HLEN) {
          bytes[12] = (Math.min(doff, bytes.length >>> 2) << 4) | (bytes[12]! & 0x0f);
          bytes[16] = 0;
          bytes[17] = 0;
          const ck = foldChecksum(sumBytes(bytes, 0, bytes.length, pseudoHeaderSum(IP_A, IP_B, 6, bytes.length)));
          bytes[16] = ck >>> 8;
          bytes[17] = ck & 0xff;
        }
        const buf = a5(bytes.length + 2 * pad);
        buf.set(bytes, pad);
        const v = TcpView.checked(guarded(buf, pad, pad + bytes.length), pad, bytes.length, IP_A, IP_B);
        if (typeof v === 'string') return;
        views++;
        const all = [v.srcPort, v.dstPort, v.seq, v.ack, v.dataOff, v.flags, v.window, v.checksum, v.urgent, v.optionsOff, v.optionsLen, v.payloadOff, v.payloadLen];
        expect(all.every(Number.isInteger)).toBe(true);
        expect(v.payloadOff + v.payloadLen).toBe(pad + bytes.length);
        if (parseTcpOptions(v, o)) parsed++;
      }),
      { numRuns: 1000 },
    );
    expect(views).toBeGreaterThan(200);
    expect(parsed).toBeGreaterThan(20);
  });
});
