/**
 * Segmentation offload: with `tsoMaxBytes`, new data leaves in segments of whole MSSs up to 64 KiB
 * that the TAP link hands to the kernel as GSO; the TCP checksum field then holds the pseudo-header
 * sum (CHECKSUM_PARTIAL). Retransmissions stay one MSS.
 */
import { describe, expect, it } from 'vitest';
import { TcpConnection, type TcpConfig, type TcpOutSegment } from '../../src/stack/tcp/index.ts';
import { Stack } from '../../src/stack/stack.ts';
import { Ipv4View, IpProto } from '../../src/stack/wire/ipv4.ts';
import { TcpView } from '../../src/stack/wire/tcp.ts';
import { foldSum, pseudoHeaderSum } from '../../src/stack/wire/checksum.ts';
import { F, guestSeg, openOpts, Recorder } from './tcp-harness.ts';

class GsoRecorder extends Recorder {
  readonly gso: number[] = [];
  override emit(seg: TcpOutSegment): void {
    this.gso.push(seg.gsoSize);
    super.emit(seg);
  }
}

function open(cfg: Partial<TcpConfig>) {
  const rec = new GsoRecorder();
  const o = openOpts({ mss: 1460, ...cfg }, 1000);
  const c = TcpConnection.acceptSyn(guestSeg({ flags: F.SYN, seq: 5000, window: 65535, mss: 1460, windowScale: 7, sackPermitted: true }), rec, 0, o);
  rec.conn = c;
  rec.take();
  rec.gso.length = 0;
  c.input(guestSeg({ flags: F.ACK, seq: 5001, ack: 1001, window: 4096 }), 0); // 4096 << 7 = 512 KiB
  return { c, rec };
}

describe('TCP segmentation offload', () => {
  it('sends whole MSSs up to tsoMaxBytes in one segment, marked with gsoSize = MSS', () => {
    const { c, rec } = open({ tsoMaxBytes: 65_000, sendBufferSize: 1 << 20 });
    c.write(new Uint8Array(200_000), 0, 200_000, 1);
    const out = rec.take();
    expect(out.length).toBeGreaterThan(0);
    // The initial window is 10 segments: one 14,600-byte segment carries it all.
    expect(out[0]!.payload.length).toBe(14_600);
    expect(rec.gso[0]).toBe(1460);
    for (const o of out) expect(o.payload.length % 1460).toBe(0);
  });

  it('without it, no segment is longer than the MSS and none is marked', () => {
    const { c, rec } = open({ tsoMaxBytes: 0 });
    c.write(new Uint8Array(200_000), 0, 200_000, 1);
    const out = rec.take();
    expect(out.length).toBe(10);
    for (const o of out) expect(o.payload.length).toBeLessThanOrEqual(1460);
    expect(rec.gso.every((g) => g === 0)).toBe(true);
  });

  it('a retransmission after a timeout is one MSS, unmarked', () => {
    const { c, rec } = open({ tsoMaxBytes: 65_000 });
    c.write(new Uint8Array(50_000), 0, 50_000, 1);
    rec.take();
    rec.gso.length = 0;
    c.poll(c.nextDeadline()! + 1); // RTO (or a tail loss probe) fires
    const again = rec.take();
    expect(again.length).toBeGreaterThan(0);
    expect(again[0]!.payload.length).toBeLessThanOrEqual(1460);
    expect(rec.gso[0]).toBe(0);
  });
});

describe('Stack.sendTcp with GSO', () => {
  const GW = 0x0a000202;
  const GUEST = 0x0a00020f;
  it('builds one frame beyond the MTU with DF, the whole length, and a partial checksum', () => {
    const frames: { frame: Uint8Array; gso: number | undefined }[] = [];
    const stack = new Stack({ network: 0x0a000200, netmask: 0xffffff00, gateway: GW, dns: 0x0a000203, mtu: 1500 }, (frame, gso) => frames.push({ frame: Uint8Array.from(frame), gso }));
    stack.gso = true;
    const seg = { flags: F.ACK | F.PSH, seq: 1, ack: 2, window: 100, options: new Uint8Array(40), optionsLen: 0, payload: new Uint8Array(5840).fill(7), payloadOff: 0, payloadLen: 5840, gsoSize: 1460 } as unknown as TcpOutSegment;
    stack.sendTcp(0x525400123456, GW, 80, GUEST, 40000, seg);
    expect(frames).toHaveLength(1);
    const { frame, gso } = frames[0]!;
    expect(gso).toBe(1460);
    expect(frame.length).toBe(14 + 20 + 20 + 5840);
    const ip = Ipv4View.checked(frame, 14, frame.length - 14) as Ipv4View;
    expect([ip.totalLen, ip.dontFragment, ip.protocol]).toEqual([20 + 20 + 5840, true, IpProto.TCP]);
    const tcpCk = (frame[14 + 20 + 16]! << 8) | frame[14 + 20 + 17]!;
    expect(tcpCk).toBe(foldSum(pseudoHeaderSum(GW, GUEST, IpProto.TCP, 20 + 5840)));
    // A full checksum would make the view verify; the partial one must not.
    expect(TcpView.checked(frame, 34, frame.length - 34, GW, GUEST)).toBe('badChecksum');
  });

  it('a segment within the MTU on a GSO link gets a partial checksum and offload 0 (checksum only, no segmentation)', () => {
    const frames: { frame: Uint8Array; gso: number | undefined }[] = [];
    const stack = new Stack({ network: 0x0a000200, netmask: 0xffffff00, gateway: GW, dns: 0x0a000203, mtu: 1500 }, (frame, gso) => frames.push({ frame: Uint8Array.from(frame), gso }));
    stack.gso = true;
    const seg = { flags: F.ACK, seq: 1, ack: 2, window: 100, options: new Uint8Array(40), optionsLen: 0, payload: new Uint8Array(1000).fill(9), payloadOff: 0, payloadLen: 1000, gsoSize: 0 } as unknown as TcpOutSegment;
    stack.sendTcp(0x525400123456, GW, 80, GUEST, 40000, seg);
    expect(frames).toHaveLength(1);
    const { frame, gso } = frames[0]!;
    expect(gso).toBe(0);
    expect(frame.length).toBe(14 + 20 + 20 + 1000);
    expect(Ipv4View.checked(frame, 14, frame.length - 14)).toBeInstanceOf(Ipv4View);
    const tcpCk = (frame[14 + 20 + 16]! << 8) | frame[14 + 20 + 17]!;
    expect(tcpCk).toBe(foldSum(pseudoHeaderSum(GW, GUEST, IpProto.TCP, 20 + 1000)));
  });

  it('without GSO on the link a segment has its full checksum and no offload argument', () => {
    const frames: { frame: Uint8Array; gso: number | undefined }[] = [];
    const stack = new Stack({ network: 0x0a000200, netmask: 0xffffff00, gateway: GW, dns: 0x0a000203, mtu: 1500 }, (frame, gso) => frames.push({ frame: Uint8Array.from(frame), gso }));
    const seg = { flags: F.ACK, seq: 1, ack: 2, window: 100, options: new Uint8Array(40), optionsLen: 0, payload: new Uint8Array(1000).fill(9), payloadOff: 0, payloadLen: 1000, gsoSize: 0 } as unknown as TcpOutSegment;
    stack.sendTcp(0x525400123456, GW, 80, GUEST, 40000, seg);
    expect(frames).toHaveLength(1);
    expect(frames[0]!.gso).toBeUndefined();
    const frame = frames[0]!.frame;
    expect(TcpView.checked(frame, 34, frame.length - 34, GW, GUEST)).toBeInstanceOf(TcpView);
  });

  it('without GSO on the link the same segment is fragmented by IP, never sent oversized', () => {
    const frames: Uint8Array[] = [];
    const stack = new Stack({ network: 0x0a000200, netmask: 0xffffff00, gateway: GW, dns: 0x0a000203, mtu: 1500 }, (frame) => frames.push(Uint8Array.from(frame)));
    const seg = { flags: F.ACK, seq: 1, ack: 2, window: 100, options: new Uint8Array(40), optionsLen: 0, payload: new Uint8Array(2920), payloadOff: 0, payloadLen: 2920, gsoSize: 1460 } as unknown as TcpOutSegment;
    stack.sendTcp(0x525400123456, GW, 80, GUEST, 40000, seg);
    for (const f of frames) expect(f.length).toBeLessThanOrEqual(1514);
  });
});
