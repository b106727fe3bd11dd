/**
 * Scripted tests of TcpConnection, grouped by RFC 9293 state / feature, in virtual time. The
 * "guest" is this script: it hand-builds segments (through the real wire encoder and parser) and
 * checks what the connection emits.
 */
import { describe, expect, it } from 'vitest';
import { TcpConnection } from '../../src/stack/tcp/connection.ts';
import type { TcpConfig } from '../../src/stack/tcp/config.ts';
import { F, Recorder, type Out, concat, flagsStr, guestSeg, openOpts, type SegSpec } from './tcp-harness.ts';

const ISS = 1000; // ours
const GISS = 5000; // the guest's

interface Opened {
  c: TcpConnection;
  rec: Recorder;
  stats: ReturnType<typeof openOpts>['stats'];
  synack: Out;
  /** The guest's next sequence number. */
  gseq: number;
}

/** Guest SYN → acceptSyn → SYN-ACK; optionally completes the handshake with the third ACK. */
function open(
  cfg: Partial<TcpConfig> = {},
  syn: Partial<SegSpec> = {},
  complete = true,
  ack: Partial<SegSpec> = {},
  iss = ISS,
  giss = GISS,
): Opened {
  const rec = new Recorder();
  const o = openOpts(cfg, iss);
  const c = TcpConnection.acceptSyn(
    guestSeg({ flags: F.SYN, seq: giss, window: 65535, mss: 1460, windowScale: 7, sackPermitted: true, ...syn }),
    rec,
    0,
    o,
  );
  rec.conn = c;
  const [synack] = rec.take();
  if (synack === undefined) throw new Error('no SYN-ACK');
  if (complete) c.input(guestSeg({ flags: F.ACK, seq: giss + 1, ack: iss + 1, window: 1024, ...ack }), 0);
  return { c, rec, stats: o.stats, synack, gseq: (giss + 1) >>> 0 };
}

function bytes(n: number, start = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (start + i) & 0xff;
  return b;
}

const ws = (x: Out) => `${flagsStr(x.flags)} ${x.seq}:${x.seq + x.payload.length} ack ${x.ack}`;

describe('handshake (RFC 9293 §3.5) and option negotiation', () => {
  it('passive open: SYN-ACK answers MSS, window scale and SACK-permitted, then ESTABLISHED', () => {
    const { c, rec, synack } = open({ mss: 1460, recvWindow: 1 << 20 }, {}, false);
    expect(flagsStr(synack.flags)).toBe('SA');
    expect(synack.seq).toBe(ISS);
    expect(synack.ack).toBe(GISS + 1);
    expect(synack.mss).toBe(1460);
    expect(synack.windowScale).toBe(5); // 1 MiB >> 5 fits in 16 bits
    expect(synack.sackPermitted).toBe(true);
    expect(synack.window).toBe(65535); // SYN windows are never scaled
    expect(c.state).toBe('syn-received');
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 100 }), 1);
    expect(c.state).toBe('established');
    expect(rec.events).toEqual(['established']);
    expect(rec.take()).toEqual([]); // the third ACK needs no answer
    const info = c.info();
    expect(info.sndWnd).toBe(100 << 7); // guest's scale applied after the SYN
    expect(info.sndWscale).toBe(7);
    expect(info.rcvWscale).toBe(5);
    expect(info.sackOk).toBe(true);
  });

  it('no window scale or SACK offered: none answered, windows unscaled and capped at 65535', () => {
    const { c, rec, synack } = open({ recvWindow: 1 << 20 }, { windowScale: undefined, sackPermitted: false });
    expect(synack.windowScale).toBeUndefined();
    expect(synack.sackPermitted).toBe(false);
    expect(c.info().sndWnd).toBe(1024);
    c.input(guestSeg({ flags: F.ACK | F.PSH, seq: GISS + 1, ack: ISS + 1, window: 1024, payload: 10 }), 1);
    c.poll(100);
    const [ack] = rec.take();
    expect(ack!.window).toBe(65535);
  });

  it('send MSS is the smaller of ours and the guest’s; 536 when the guest sends none', () => {
    expect(open({ mss: 1460 }, { mss: 1200 }).c.info().sndMss).toBe(1200);
    expect(open({ mss: 1000 }, { mss: 9000 }).c.info().sndMss).toBe(1000);
    expect(open({ mss: 1460 }, { mss: undefined }).c.info().sndMss).toBe(536);
  });

  it('SACK disabled in config: not answered even if offered', () => {
    const { synack, c } = open({ sack: false });
    expect(synack.sackPermitted).toBe(false);
    expect(c.info().sackOk).toBe(false);
  });

  it('a retransmitted guest SYN gets the SYN-ACK again', () => {
    const { c, rec } = open({}, {}, false);
    c.input(guestSeg({ flags: F.SYN, seq: GISS, mss: 1460 }), 5);
    const [again] = rec.take();
    expect(flagsStr(again!.flags)).toBe('SA');
    expect(again!.seq).toBe(ISS);
    expect(c.state).toBe('syn-received');
  });

  it('SYN-ACK retransmitted with exponential backoff, then RST and close(timeout)', () => {
    const { c, rec, stats } = open({ initialRtoMs: 1000, maxSynRetransmits: 3 }, {}, false);
    const times: number[] = [];
    for (let i = 0; i < 10 && c.state !== 'closed'; i++) {
      const d = c.nextDeadline()!;
      times.push(d);
      c.poll(d);
    }
    expect(times).toEqual([1000, 3000, 7000, 15000]);
    const out = rec.take().map((x) => flagsStr(x.flags));
    expect(out).toEqual(['SA', 'SA', 'SA', 'AR']);
    expect(rec.closeReason).toBe('timeout');
    expect(stats.synRetransmits).toBe(3);
    expect(c.nextDeadline()).toBeUndefined();
  });

  it('SYN-RECEIVED: an ACK acknowledging something else gets RST <SEQ=SEG.ACK>', () => {
    const { c, rec } = open({}, {}, false);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 77 }), 1);
    const [rst] = rec.take();
    expect(flagsStr(rst!.flags)).toBe('R');
    expect(rst!.seq).toBe(ISS + 77);
    expect(c.state).toBe('syn-received');
  });

  it('data written before the handshake completes goes out once it does', () => {
    const { c, rec } = open({}, {}, false);
    expect(c.write(bytes(100), 0, 100, 0)).toBe(100);
    expect(rec.take()).toEqual([]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 1024 }), 1);
    const [d] = rec.take();
    expect(ws(d!)).toBe(`AP ${ISS + 1}:${ISS + 101} ack ${GISS + 1}`);
  });

  it('active open: SYN offers MSS/WS/SACK; SYN-ACK → ACK, ESTABLISHED, first RTT sample', () => {
    const rec = new Recorder();
    const o = openOpts({ mss: 1400 }, ISS);
    const c = TcpConnection.connect(rec, 0, o);
    rec.conn = c;
    const [syn] = rec.take();
    expect(flagsStr(syn!.flags)).toBe('S');
    expect(syn!.mss).toBe(1400);
    expect(syn!.windowScale).toBe(5);
    expect(syn!.sackPermitted).toBe(true);
    expect(c.state).toBe('syn-sent');
    c.input(
      guestSeg({ flags: F.SYN | F.ACK, seq: GISS, ack: ISS + 1, window: 2000, mss: 1300, windowScale: 2, sackPermitted: true }),
      3,
    );
    expect(c.state).toBe('established');
    const [ack] = rec.take();
    expect(ws(ack!)).toBe(`A ${ISS + 1}:${ISS + 1} ack ${GISS + 1}`);
    expect(rec.events).toEqual(['established']);
    const info = c.info();
    expect(info.sndWnd).toBe(2000); // the SYN-ACK's window is not scaled
    expect(info.sndMss).toBe(1300);
    expect(info.srtt).toBe(3);
  });

  it('SYN-SENT: RST with an acceptable ACK closes (rst); an unacceptable ACK gets a RST', () => {
    const rec = new Recorder();
    const c = TcpConnection.connect(rec, 0, openOpts({}, ISS));
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: GISS, ack: ISS + 5 }), 1);
    expect(rec.take().map((x) => `${flagsStr(x.flags)} ${x.seq}`)).toEqual([`R ${ISS + 5}`]);
    expect(c.state).toBe('syn-sent');
    c.input(guestSeg({ flags: F.RST, seq: 0 }), 1); // no ACK: ignored
    expect(c.state).toBe('syn-sent');
    c.input(guestSeg({ flags: F.RST | F.ACK, seq: 0, ack: ISS + 1 }), 2);
    expect(rec.closeReason).toBe('rst');
  });

  it('simultaneous open: SYN in SYN-SENT → SYN-RECEIVED with SYN-ACK', () => {
    const rec = new Recorder();
    const c = TcpConnection.connect(rec, 0, openOpts({}, ISS));
    rec.take();
    c.input(guestSeg({ flags: F.SYN, seq: GISS, mss: 1460 }), 1);
    expect(c.state).toBe('syn-received');
    expect(rec.take().map(ws)).toEqual([`SA ${ISS}:${ISS} ack ${GISS + 1}`]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1 }), 2);
    expect(c.state).toBe('established');
  });
});

describe('data transfer and ACKs (ESTABLISHED)', () => {
  it('host → guest: MSS-sized segments, PSH on the last, bounded by the guest window', () => {
    const { c, rec } = open({}, { mss: 1000 }, true, { window: 10 }); // 10 << 7 = 1280 bytes
    expect(c.write(bytes(3000), 0, 3000, 1)).toBe(3000);
    const out = rec.take();
    // The 280 bytes left in the window wait: a runt while data is in flight is SWS (RFC 9293 §3.8.6.2.1).
    expect(out.map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1001} ack ${GISS + 1}`]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1001, window: 100 }), 2);
    const more = rec.take();
    expect(more.map(ws)).toEqual([`A ${ISS + 1001}:${ISS + 2001} ack ${GISS + 1}`, `AP ${ISS + 2001}:${ISS + 3001} ack ${GISS + 1}`]);
    expect(concat([...out, ...more].map((x) => x.payload))).toEqual(bytes(3000));
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 3001, window: 100 }), 3);
    expect(c.sendQueued).toBe(0);
    expect(c.nextDeadline()).toBeUndefined(); // nothing outstanding: no RTO running
  });

  it('guest → host: in-order data is delivered at once, window shrinks by what the app holds', () => {
    const { c, rec } = open({ recvWindow: 60000, windowScale: 0 });
    rec.autoConsume = false;
    c.input(guestSeg({ flags: F.ACK | F.PSH, seq: GISS + 1, ack: ISS + 1, payload: bytes(1000) }), 1);
    expect(rec.received()).toEqual(bytes(1000));
    expect(c.recvHeld).toBe(1000);
    c.poll(c.nextDeadline()!);
    const [ack] = rec.take();
    expect(ack!.ack).toBe(GISS + 1001);
    expect(ack!.window).toBe(60000 - 1000);
  });

  it('the app writes from inside onData (echo): one segment carries data and the ACK', () => {
    const { c, rec } = open();
    rec.onData = (buf, off, len) => {
      rec.data.push(buf.slice(off, off + len));
      c.write(buf, off, len, 1);
      c.recvConsumed(len, 1);
    };
    c.input(guestSeg({ flags: F.ACK | F.PSH, seq: GISS + 1, ack: ISS + 1, payload: bytes(10) }), 1);
    const out = rec.take();
    expect(out.map(ws)).toEqual([`AP ${ISS + 1}:${ISS + 11} ack ${GISS + 11}`]);
    expect(out[0]!.payload).toEqual(bytes(10));
  });

  it('write accepts only free buffer space; onWritable fires once ACKs free a quarter of it', () => {
    const { c, rec } = open({ sendBufferSize: 4000 }, { mss: 1000 }, true, { window: 0xffff });
    expect(c.write(bytes(5000), 0, 5000, 1)).toBe(4000);
    expect(c.sendFree()).toBe(0);
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 501 }), 2);
    expect(rec.events).not.toContain('writable');
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1001 }), 3);
    expect(rec.events.filter((e) => e === 'writable')).toHaveLength(1);
    expect(c.sendFree()).toBe(1000);
  });

  it('credit: data beyond the advertised window is trimmed, never delivered', () => {
    const { c, rec, stats } = open({ recvWindow: 2000, windowScale: 0 });
    rec.autoConsume = false;
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: bytes(1500) }), 1);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1501, ack: ISS + 1, payload: bytes(1500, 1500) }), 2);
    expect(c.recvHeld).toBe(2000);
    expect(stats.trimmedBytes).toBe(1000);
    const last = rec.take().at(-1)!;
    expect(last.ack).toBe(GISS + 2001);
    expect(last.window).toBe(0);
    expect(rec.received()).toEqual(bytes(2000));
  });
});

describe('delayed ACK (RFC 1122 §4.2.3.2, RFC 5681 §4.2)', () => {
  it('the first data is ACKed at once to announce the scaled window the SYN-ACK could not', () => {
    const { c, rec } = open({ recvWindow: 1 << 20 });
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 100 }), 1);
    const [a] = rec.take();
    expect(a!.ack).toBe(GISS + 101);
    expect(a!.window).toBe(((1 << 20) - 0) >> 5); // the app consumed it already
  });

  it('one segment: ACK after delayedAckMs; two full segments: ACK at once', () => {
    const { c, rec } = open({ delayedAckMs: 10, mss: 1000 }, { mss: 1000 });
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 1000 }), 50);
    rec.take(); // the window announcement above
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1001, ack: ISS + 1, payload: 1000 }), 100);
    expect(rec.take()).toEqual([]);
    expect(c.nextDeadline()).toBe(110);
    c.poll(109);
    expect(rec.take()).toEqual([]);
    c.poll(110);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 2001}`]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 2001, ack: ISS + 1, payload: 1000 }), 200);
    expect(rec.take()).toEqual([]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 3001, ack: ISS + 1, payload: 1000 }), 201);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 4001}`]);
    expect(c.nextDeadline()).toBeUndefined();
  });

  it('the delayed ACK rides on data the app sends meanwhile', () => {
    const { c, rec } = open();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 10 }), 1);
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 11, ack: ISS + 1, payload: 10 }), 1);
    c.write(bytes(5), 0, 5, 2);
    expect(rec.take().map(ws)).toEqual([`AP ${ISS + 1}:${ISS + 6} ack ${GISS + 21}`]);
    c.poll(100);
    expect(rec.take()).toEqual([]);
  });
});

describe('stretch ACKs: a host that defers ACKs to the end of its frame batch (TcpHost.deferAck)', () => {
  /** A Recorder whose deferAck is recorded; the test plays the end of the batch. */
  function openDeferring(cfg: Partial<TcpConfig> = {}): Opened & { deferred: () => number } {
    const o = open({ delayedAckMs: 10, mss: 1000, recvWindow: 1 << 20, ...cfg }, { mss: 1000 });
    let asked = 0;
    (o.rec as Recorder & { deferAck(): void }).deferAck = () => asked++;
    o.c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 1000 }), 1);
    o.rec.take(); // the first data's window announcement (always at once)
    return { ...o, deferred: () => asked };
  }

  it('twenty full segments in one batch: one ACK for all of them at the end of the batch', () => {
    const { c, rec, deferred } = openDeferring();
    for (let i = 1; i <= 20; i++) c.input(guestSeg({ flags: F.ACK, seq: GISS + 1 + 1000 * i, ack: ISS + 1, payload: 1000 }), 2);
    expect(rec.take()).toEqual([]);
    expect(deferred()).toBe(1); // asked once per batch, not per segment
    c.flushDeferredAck(2);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 21001}`]);
    c.flushDeferredAck(2); // nothing more owed
    expect(rec.take()).toEqual([]);
    expect(c.nextDeadline()).toBeUndefined();
  });

  it('64 KiB unacknowledged within a batch: the ACK goes at once', () => {
    const { c, rec } = openDeferring();
    const out: string[] = [];
    for (let i = 1; i <= 70; i++) {
      c.input(guestSeg({ flags: F.ACK, seq: GISS + 1 + 1000 * i, ack: ISS + 1, payload: 1000 }), 2);
      out.push(...rec.take().map(ws));
    }
    // The 66th segment since the last ACK makes 66,000 ≥ 65,536 bytes: one ACK then (for
    // everything up to GISS + 67001); the rest waits for the end of the batch.
    expect(out).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 67001}`]);
    c.flushDeferredAck(3);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 71001}`]);
  });

  it('an ACK carried by data sent meanwhile is not sent again; a host that never flushes still ACKs after delayedAckMs', () => {
    const { c, rec } = openDeferring();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1001, ack: ISS + 1, payload: 1000 }), 5);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 2001, ack: ISS + 1, payload: 1000 }), 5);
    c.write(bytes(5), 0, 5, 6);
    expect(rec.take().map(ws)).toEqual([`AP ${ISS + 1}:${ISS + 6} ack ${GISS + 3001}`]);
    c.flushDeferredAck(6);
    expect(rec.take()).toEqual([]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 3001, ack: ISS + 6, payload: 1000 }), 20);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 4001, ack: ISS + 6, payload: 1000 }), 20);
    expect(rec.take()).toEqual([]);
    expect(c.nextDeadline()).toBe(30); // the delayed-ACK bound
    c.poll(30);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 6}:${ISS + 6} ack ${GISS + 5001}`]);
  });

  it('out-of-order data is still ACKed at once, with SACK', () => {
    const { c, rec } = openDeferring();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 3001, ack: ISS + 1, payload: 1000 }), 2);
    const [a] = rec.take();
    expect(a!.ack).toBe(GISS + 1001);
    expect(a!.sack).toEqual([[GISS + 3001, GISS + 4001]]);
  });
});

describe('out-of-order data and SACK (RFC 2018)', () => {
  it('a gap gets an immediate duplicate ACK with a SACK block; filling it delivers in order', () => {
    const { c, rec, stats } = open();
    const g = GISS + 1;
    c.input(guestSeg({ flags: F.ACK, seq: g + 100, ack: ISS + 1, payload: bytes(100, 100) }), 1);
    let [a] = rec.take();
    expect(a!.ack).toBe(g);
    expect(a!.sack).toEqual([[g + 100, g + 200]]);
    c.input(guestSeg({ flags: F.ACK, seq: g + 300, ack: ISS + 1, payload: bytes(100, 300) }), 2);
    [a] = rec.take();
    expect(a!.sack).toEqual([
      [g + 300, g + 400],
      [g + 100, g + 200],
    ]); // most recent block first
    c.input(guestSeg({ flags: F.ACK, seq: g + 200, ack: ISS + 1, payload: bytes(100, 200) }), 3);
    [a] = rec.take();
    expect(a!.sack).toEqual([[g + 100, g + 400]]);
    expect(rec.data).toEqual([]);
    c.input(guestSeg({ flags: F.ACK, seq: g, ack: ISS + 1, payload: bytes(100) }), 4);
    [a] = rec.take();
    expect(a!.ack).toBe(g + 400);
    expect(a!.sack).toEqual([]);
    expect(rec.received()).toEqual(bytes(400));
    expect(stats.oooSegs).toBe(3);
    expect(c.info().oooBytes).toBe(0);
  });

  it('overlapping and duplicate segments deliver each byte exactly once', () => {
    const { c, rec, stats } = open();
    const g = GISS + 1;
    c.input(guestSeg({ flags: F.ACK, seq: g + 50, ack: ISS + 1, payload: bytes(100, 50) }), 1);
    c.input(guestSeg({ flags: F.ACK, seq: g + 20, ack: ISS + 1, payload: bytes(200, 20) }), 1);
    c.input(guestSeg({ flags: F.ACK, seq: g, ack: ISS + 1, payload: bytes(60) }), 1);
    expect(rec.received()).toEqual(bytes(220));
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: g, ack: ISS + 1, payload: bytes(60) }), 2); // all old
    expect(rec.take().map((x) => x.ack)).toEqual([g + 220]); // answered at once
    expect(stats.dupDataSegs).toBeGreaterThan(0);
    expect(rec.received()).toEqual(bytes(220));
  });

  it('the chunk budget bounds out-of-order bookkeeping; refused data is counted, not delivered wrong', () => {
    const { c, rec, stats } = open({ maxOooChunks: 2 });
    const g = GISS + 1;
    for (let k = 1; k <= 4; k++) c.input(guestSeg({ flags: F.ACK, seq: g + 20 * k, ack: ISS + 1, payload: bytes(10, 20 * k) }), 1);
    expect(stats.oooDropped).toBe(2);
    c.input(guestSeg({ flags: F.ACK, seq: g, ack: ISS + 1, payload: bytes(10) }), 2);
    expect(rec.received()).toEqual(bytes(10));
  });

  it('sender: retransmits only the holes the guest did not SACK', () => {
    const { c, rec, stats } = open({}, { mss: 100 }, true, { window: 0xffff });
    c.write(bytes(1000), 0, 1000, 1);
    expect(rec.take()).toHaveLength(10);
    const u = ISS + 1;
    // Segments 0 and 3 lost; the guest SACKs the rest as they arrive.
    const sacks: Array<Array<[number, number]>> = [
      [[u + 100, u + 300]],
      [[u + 100, u + 300], [u + 400, u + 600]],
      [[u + 400, u + 800], [u + 100, u + 300]],
    ];
    for (const s of sacks) c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u, sack: s }), 2);
    const rtx = rec.take();
    expect(rtx.map(ws)).toEqual([`A ${u}:${u + 100} ack ${GISS + 1}`, `A ${u + 300}:${u + 400} ack ${GISS + 1}`]);
    expect(stats.fastRetransmits).toBe(1);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u + 1000 }), 3);
    expect(c.info().inRecovery).toBe(false);
    expect(c.sendQueued).toBe(0);
  });
});

describe('retransmission timeout (RFC 6298)', () => {
  it('RTO starts at the initial value, doubles each expiry, and gives up with RST + timeout', () => {
    const { c, rec, stats } = open({ initialRtoMs: 1000, maxRetransmits: 3, maxRtoMs: 60_000 }, {}, false);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1 }), 0); // no RTT sample: SYN-ACK timed from 0
    rec.take();
    c.write(bytes(10), 0, 10, 0);
    rec.take();
    const times: number[] = [];
    while (c.state !== 'closed') {
      const d = c.nextDeadline()!;
      times.push(d);
      c.poll(d);
    }
    // The handshake's 0 ms sample sets RTO to the 200 ms floor.
    expect(times).toEqual([200, 600, 1400, 3000]);
    const out = rec.take().map((x) => `${flagsStr(x.flags)} ${x.seq}:${x.seq + x.payload.length}`);
    expect(out).toEqual([`AP ${ISS + 1}:${ISS + 11}`, `AP ${ISS + 1}:${ISS + 11}`, `AP ${ISS + 1}:${ISS + 11}`, `AR ${ISS + 11}:${ISS + 11}`]);
    expect(rec.closeReason).toBe('timeout');
    expect(stats.rtoTimeouts).toBe(3);
    expect(stats.retransmitTimeouts).toBe(1);
  });

  it('an RTT sample sets RTO = SRTT + 4·RTTVAR, floored at minRtoMs; new ACKs clear the backoff', () => {
    const { c, rec } = open({ minRtoMs: 10 });
    c.write(bytes(10), 0, 10, 100);
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 11 }), 120); // 20 ms sample
    // First sample (RFC 6298 2.2) after the 0 ms handshake sample.
    const info = c.info();
    expect(info.srtt).toBeCloseTo(2.5, 5); // 0.875·0 + 0.125·20
    c.write(bytes(10), 0, 10, 200);
    const d = c.nextDeadline()!;
    expect(d - 200).toBeCloseTo(info.rto, 5);
    c.poll(d);
    expect(rec.take()).toHaveLength(2); // original + one retransmission
    expect(c.nextDeadline()! - d).toBeCloseTo(2 * info.rto, 5);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 21 }), d + 1);
    c.write(bytes(10), 0, 10, d + 2);
    expect(c.nextDeadline()! - (d + 2)).toBeCloseTo(info.rto, 5);
  });

  it('after an RTO the sender goes back to SND.UNA with cwnd = 1 MSS (slow start)', () => {
    const { c, rec } = open({ tlpMinMs: 0 }, { mss: 100 }, true, { window: 0xffff });
    c.write(bytes(500), 0, 500, 0);
    expect(rec.take()).toHaveLength(5);
    c.poll(c.nextDeadline()!);
    const info = c.info();
    expect(info.cwnd).toBe(100);
    expect(rec.take().map((x) => x.seq)).toEqual([ISS + 1]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 101 }), 300);
    expect(rec.take().map((x) => x.seq)).toEqual([ISS + 101, ISS + 201]); // cwnd 2 MSS after one ACK in slow start
  });
});

describe('tail loss probe (RFC 8985 §7)', () => {
  it('a lost tail draws a probe after PTO (not an RTO); its SACK starts recovery', () => {
    const { c, rec, stats } = open({ tlpMinMs: 10 }, { mss: 100 }, true, { window: 0xffff });
    c.write(bytes(500), 0, 500, 0);
    expect(rec.take()).toHaveLength(5);
    expect(c.nextDeadline()).toBe(10); // PTO = max(2·SRTT, 10 ms) < RTO (200 ms)
    c.poll(10);
    const u = ISS + 1;
    expect(rec.take().map(ws)).toEqual([`AP ${u + 400}:${u + 500} ack ${GISS + 1}`]); // the last segment again
    expect(stats.tailLossProbes).toBe(1);
    expect(c.nextDeadline()).toBe(210); // then the RTO guards it
    // Only the probe arrived: the guest SACKs it; holes below are lost.
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u, window: 0xffff, sack: [[u + 400, u + 500]] }), 11);
    expect(c.info().inRecovery).toBe(true);
    expect(rec.take().map((x) => x.seq)).toEqual([u, u + 100]); // pipe-limited hole retransmissions
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u + 200, window: 0xffff, sack: [[u + 400, u + 500]] }), 12);
    expect(rec.take().map((x) => x.seq)).toEqual([u + 200, u + 300]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u + 500, window: 0xffff }), 13);
    expect(c.info().inRecovery).toBe(false);
    expect(stats.rtoTimeouts).toBe(0);
  });

  it('no probe for a single segment (it may be waiting for a delayed ACK) or without SACK', () => {
    const one = open({}, { mss: 100 }, true, { window: 0xffff });
    one.c.write(bytes(100), 0, 100, 0);
    expect(one.c.nextDeadline()).toBe(200);
    const nosack = open({ sack: false }, { mss: 100 }, true, { window: 0xffff });
    nosack.c.write(bytes(500), 0, 500, 0);
    expect(nosack.c.nextDeadline()).toBe(200);
  });
});

describe('fast retransmit and NewReno (RFC 5681 §3.2, RFC 6582), SACK off', () => {
  it('retransmits on the third duplicate ACK, not before; partial ACK retransmits the next hole', () => {
    const { c, rec, stats } = open({ sack: false }, { mss: 100, sackPermitted: false }, true, { window: 0xffff });
    c.write(bytes(1000), 0, 1000, 1);
    rec.take();
    const u = ISS + 1;
    const dup = () => c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u, window: 0xffff }), 2);
    dup();
    dup();
    expect(rec.take()).toEqual([]);
    dup();
    expect(rec.take().map(ws)).toEqual([`A ${u}:${u + 100} ack ${GISS + 1}`]);
    expect(stats.fastRetransmits).toBe(1);
    const info = c.info();
    expect(info.inRecovery).toBe(true);
    expect(info.ssthresh).toBe(500);
    // Partial ACK (segments 0–3 arrived, 4 lost too): retransmit at the new SND.UNA.
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u + 400, window: 0xffff }), 3);
    expect(rec.take().map((x) => x.seq)).toEqual([u + 400]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: u + 1000, window: 0xffff }), 4);
    expect(c.info().inRecovery).toBe(false);
    expect(c.info().cwnd).toBeLessThanOrEqual(500);
  });

  it('a window update is not a duplicate ACK', () => {
    const { c, rec, stats } = open({ sack: false }, { mss: 100, sackPermitted: false }, true, { window: 0xffff });
    c.write(bytes(1000), 0, 1000, 1);
    rec.take();
    for (let w = 100; w < 104; w++) c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: w }), 2);
    expect(stats.fastRetransmits).toBe(0);
  });
});

describe('zero window and persist (RFC 9293 §3.8.6.1)', () => {
  it('the guest closes its window: probes with backoff, data resumes when it opens', () => {
    const { c, rec, stats } = open({ minRtoMs: 200 }, { mss: 100 }, true, { window: 0 });
    c.write(bytes(300), 0, 300, 0);
    expect(rec.take()).toEqual([]);
    const d1 = c.nextDeadline()!;
    expect(d1).toBe(200);
    c.poll(d1);
    let out = rec.take();
    expect(out.map(ws)).toEqual([`A ${ISS + 1}:${ISS + 2} ack ${GISS + 1}`]); // 1-byte probe
    // Still closed: the probe is refused (ACK not advanced), next probe after twice the interval.
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 0 }), 201);
    const d2 = c.nextDeadline()!;
    expect(d2).toBe(200 + 400);
    c.poll(d2);
    expect(rec.take()).toHaveLength(1);
    expect(stats.windowProbes).toBe(2);
    // The window opens (the guest took the probe byte).
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 2, window: 10 }), 700);
    out = rec.take();
    expect(out.map(ws)).toEqual([`A ${ISS + 2}:${ISS + 102} ack ${GISS + 1}`, `A ${ISS + 102}:${ISS + 202} ack ${GISS + 1}`, `AP ${ISS + 202}:${ISS + 301} ack ${GISS + 1}`]);
    expect(concat(out.map((x) => x.payload))).toEqual(bytes(299, 1));
  });

  it('a probed guest that keeps answering is never timed out', () => {
    const { c, rec } = open({ maxRetransmits: 3, maxRtoMs: 1000 }, {}, true, { window: 0 });
    c.write(bytes(10), 0, 10, 0);
    for (let i = 0; i < 20; i++) {
      const d = c.nextDeadline()!;
      c.poll(d);
      c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 0 }), d + 1);
    }
    expect(c.state).toBe('established');
    expect(rec.take()).toHaveLength(20);
  });

  it('our window closes while the app holds data, and a window update follows consumption', () => {
    const { c, rec, stats } = open({ recvWindow: 4000, windowScale: 0, mss: 1000 }, { mss: 1000 });
    rec.autoConsume = false;
    for (let k = 0; k < 4; k++) c.input(guestSeg({ flags: F.ACK, seq: GISS + 1 + 1000 * k, ack: ISS + 1, payload: 1000 }), 1);
    const acks = rec.take();
    expect(acks.at(-1)!.window).toBe(0);
    expect(acks.at(-1)!.ack).toBe(GISS + 4001);
    // A zero-window probe from the guest is answered with the (still zero) window.
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 4001, ack: ISS + 1, payload: 1 }), 2);
    expect(rec.take().map((x) => [x.ack, x.window])).toEqual([[GISS + 4001, 0]]);
    c.recvConsumed(500, 3); // below the SWS threshold (min(buf/2, MSS) = 1000)
    expect(rec.take()).toEqual([]);
    c.recvConsumed(1500, 4);
    expect(rec.take().map((x) => [x.ack, x.window])).toEqual([[GISS + 4001, 2000]]);
    expect(stats.windowUpdates).toBe(1);
  });
});

describe('closing: FIN both ways and half-close (RFC 9293 §3.6)', () => {
  it('guest closes first: CLOSE-WAIT, we keep sending, our FIN → LAST-ACK → closed(fin)', () => {
    const { c, rec } = open();
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 1, ack: ISS + 1, payload: 5 }), 1);
    expect(c.state).toBe('close-wait');
    expect(rec.events).toEqual(['established', 'data:5', 'peerfin']);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 7}`]); // FIN acked at once
    c.write(bytes(20), 0, 20, 2); // half-close: the other direction still flows
    c.shutdownWrite(2);
    expect(c.state).toBe('last-ack');
    expect(rec.take().map(ws)).toEqual([`AP ${ISS + 1}:${ISS + 21} ack ${GISS + 7}`, `AF ${ISS + 21}:${ISS + 21} ack ${GISS + 7}`]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 7, ack: ISS + 22 }), 3);
    expect(c.state).toBe('closed');
    expect(rec.closeReason).toBe('fin');
    expect(c.nextDeadline()).toBeUndefined();
  });

  it('FIN rides on the last data segment when the app shuts down right after writing', () => {
    const { c, rec } = open();
    c.shutdownWrite(1); // nothing queued: a bare FIN
    expect(rec.take().map(ws)).toEqual([`AF ${ISS + 1}:${ISS + 1} ack ${GISS + 1}`]);
    const o = open();
    o.c.write(bytes(10), 0, 10, 0);
    o.rec.take();
    o.c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 0 }), 1); // window shut: data waits
    o.c.shutdownWrite(1);
    o.c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 11, window: 100 }), 2);
    expect(o.rec.take().map(ws)).toEqual([`AF ${ISS + 11}:${ISS + 11} ack ${GISS + 1}`]);
    const p = open({}, { mss: 1000 });
    p.c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 0 }), 1);
    p.c.write(bytes(10), 0, 10, 1);
    p.c.shutdownWrite(1);
    p.c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, window: 100 }), 2);
    expect(p.rec.take().map(ws)).toEqual([`AFP ${ISS + 1}:${ISS + 11} ack ${GISS + 1}`]);
  });

  it('we close first: FIN-WAIT-1 → FIN-WAIT-2 (guest data still delivered) → TIME-WAIT → closed', () => {
    const { c, rec } = open({ timeWaitMs: 1000 });
    c.shutdownWrite(1);
    expect(c.state).toBe('fin-wait-1');
    expect(c.write(bytes(1), 0, 1, 1)).toBe(0);
    rec.take();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 2 }), 2);
    expect(c.state).toBe('fin-wait-2');
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 2, payload: 7 }), 3);
    expect(rec.received()).toHaveLength(7);
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 8, ack: ISS + 2 }), 4);
    expect(c.state).toBe('time-wait');
    expect(rec.take().at(-1)!.ack).toBe(GISS + 9);
    expect(c.nextDeadline()).toBe(1004);
    // A retransmitted FIN (our ACK was lost) is ACKed again and restarts the timer.
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 8, ack: ISS + 2 }), 500);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 2}:${ISS + 2} ack ${GISS + 9}`]);
    expect(c.nextDeadline()).toBe(1500);
    c.poll(1499);
    expect(c.state).toBe('time-wait');
    c.poll(1500);
    expect(rec.closeReason).toBe('fin');
    expect(rec.events.filter((e) => e.startsWith('close'))).toEqual(['close:fin']);
  });

  it('simultaneous close: FIN-WAIT-1 + FIN → CLOSING → ACK → TIME-WAIT', () => {
    const { c, rec } = open();
    c.shutdownWrite(1);
    rec.take();
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 1, ack: ISS + 1 }), 2);
    expect(c.state).toBe('closing');
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 2, ack: ISS + 2 }), 3);
    expect(c.state).toBe('time-wait');
  });

  it('FIN that also acknowledges our FIN goes straight to TIME-WAIT', () => {
    const { c, rec } = open();
    c.shutdownWrite(1);
    rec.take();
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 1, ack: ISS + 2 }), 2);
    expect(c.state).toBe('time-wait');
  });

  it('a guest FIN ahead of missing data waits for the data', () => {
    const { c, rec } = open();
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 11, ack: ISS + 1, payload: 5 }), 1);
    expect(rec.events).toEqual(['established']);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 10 }), 2);
    expect(rec.events).toEqual(['established', 'data:10', 'data:5', 'peerfin']);
    expect(c.state).toBe('close-wait');
  });

  it('shutdownWrite in SYN-RECEIVED sends the FIN once established', () => {
    const { c, rec } = open({}, {}, false);
    c.write(bytes(3), 0, 3, 0);
    c.shutdownWrite(0);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1 }), 1);
    expect(c.state).toBe('fin-wait-1');
    expect(rec.take().map(ws)).toEqual([`AFP ${ISS + 1}:${ISS + 4} ack ${GISS + 1}`]);
  });
});

describe('RST and RFC 5961 defences', () => {
  it('RST exactly at RCV.NXT closes with rst and sends nothing', () => {
    const { c, rec } = open();
    c.input(guestSeg({ flags: F.RST, seq: GISS + 1 }), 1);
    expect(rec.closeReason).toBe('rst');
    expect(rec.take()).toEqual([]);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1, payload: 5 }), 2); // after close: ignored
    expect(rec.take()).toEqual([]);
    expect(rec.received()).toHaveLength(0);
  });

  it('RST in the window but not exact gets a challenge ACK; out of the window is dropped silently', () => {
    const { c, rec, stats } = open();
    c.input(guestSeg({ flags: F.RST, seq: GISS + 100 }), 1);
    expect(c.state).toBe('established');
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 1}`]);
    c.input(guestSeg({ flags: F.RST, seq: GISS - 100 }), 2);
    c.input(guestSeg({ flags: F.RST, seq: GISS + 1 + (1 << 21) }), 2);
    expect(rec.take()).toEqual([]);
    expect(c.state).toBe('established');
    expect(stats.challengeAcks).toBe(1);
  });

  it('SYN on an established connection gets a challenge ACK (RFC 5961 §4)', () => {
    const { c, rec, stats } = open();
    c.input(guestSeg({ flags: F.SYN, seq: GISS + 50 }), 1);
    expect(c.state).toBe('established');
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 1}`]);
    expect(stats.synInSynchronized).toBe(1);
  });

  it('challenge ACKs are rate-limited per connection', () => {
    const { c, rec, stats } = open({ challengeAckPerSecond: 3 });
    for (let i = 0; i < 10; i++) c.input(guestSeg({ flags: F.RST, seq: GISS + 10 + i }), 5);
    expect(rec.take()).toHaveLength(3);
    expect(stats.challengeAcksLimited).toBe(7);
    c.input(guestSeg({ flags: F.RST, seq: GISS + 10 }), 1006);
    expect(rec.take()).toHaveLength(1);
  });

  it('ACK for data never sent: ACK back and drop the segment (its data too)', () => {
    const { c, rec, stats } = open();
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 500, payload: 10 }), 1);
    expect(rec.received()).toHaveLength(0);
    expect(rec.take().map(ws)).toEqual([`A ${ISS + 1}:${ISS + 1} ack ${GISS + 1}`]);
    expect(stats.ackOfUnsent).toBe(1);
  });

  it('a segment outside the receive window is answered with an ACK and dropped', () => {
    const { c, rec, stats } = open({ recvWindow: 1000, windowScale: 0 });
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 5000, ack: ISS + 1, payload: 10 }), 1);
    expect(rec.take().map((x) => x.ack)).toEqual([GISS + 1]);
    expect(stats.outOfWindow).toBe(1);
    expect(c.info().oooBytes).toBe(0);
  });

  it('abort sends RST (acceptable sequence) and closes once', () => {
    const { c, rec } = open();
    c.write(bytes(10), 0, 10, 1);
    rec.take();
    c.abort(2);
    expect(rec.take().map((x) => `${flagsStr(x.flags)} ${x.seq} ${x.ack}`)).toEqual([`AR ${ISS + 11} ${GISS + 1}`]);
    expect(rec.events.filter((e) => e.startsWith('close'))).toEqual(['close:abort']);
    c.abort(3);
    c.poll(10_000);
    expect(rec.events.filter((e) => e.startsWith('close'))).toHaveLength(1);
  });

  it('abort from inside onData stops processing the segment', () => {
    const { c, rec } = open();
    rec.onData = () => c.abort(1);
    c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 1, ack: ISS + 1, payload: 10 }), 1);
    expect(rec.events).toEqual(['established', 'close:abort']);
    expect(rec.take().map((x) => flagsStr(x.flags))).toEqual(['AR']);
  });
});

describe('TIME-WAIT reuse (RFC 9293 §3.10.7.4, RFC 6191)', () => {
  function inTimeWait() {
    const o = open();
    o.c.shutdownWrite(1);
    o.c.input(guestSeg({ flags: F.ACK | F.FIN, seq: GISS + 1, ack: ISS + 2 }), 2);
    expect(o.c.state).toBe('time-wait');
    o.rec.take();
    return o;
  }

  it('a new SYN with a higher sequence number ends TIME-WAIT: input returns reuse', () => {
    const { c, rec } = inTimeWait();
    expect(c.input(guestSeg({ flags: F.SYN, seq: GISS + 100000 }), 3)).toBe('reuse');
    expect(c.state).toBe('closed');
    expect(rec.closeReason).toBe('fin');
  });

  it('an old SYN does not: it gets an ACK', () => {
    const { c, rec } = inTimeWait();
    expect(c.input(guestSeg({ flags: F.SYN, seq: GISS - 100 }), 3)).toBe('ok');
    expect(c.state).toBe('time-wait');
    expect(rec.take()).toHaveLength(1);
  });

  it('an acceptable RST ends TIME-WAIT early, reported as fin (both sides had finished)', () => {
    const { c, rec } = inTimeWait();
    c.input(guestSeg({ flags: F.RST, seq: GISS + 2 }), 3);
    expect(rec.closeReason).toBe('fin');
  });
});

describe('keepalive (RFC 9293 §3.8.4)', () => {
  const keepalive = { idleMs: 1000, intervalMs: 100, count: 3 };

  it('probes an idle guest with SEQ = SND.UNA − 1 and a live answer resets it', () => {
    const { c, rec, stats } = open({ keepalive });
    expect(c.nextDeadline()).toBe(1000);
    c.poll(1000);
    expect(rec.take().map(ws)).toEqual([`A ${ISS}:${ISS} ack ${GISS + 1}`]);
    expect(c.nextDeadline()).toBe(1100);
    c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: ISS + 1 }), 1050);
    expect(c.nextDeadline()).toBe(2050);
    expect(stats.keepaliveProbes).toBe(1);
  });

  it('count unanswered probes: RST and close(timeout)', () => {
    const { c, rec, stats } = open({ keepalive });
    const times: number[] = [];
    while (c.state !== 'closed') {
      const d = c.nextDeadline()!;
      times.push(d);
      c.poll(d);
    }
    expect(times).toEqual([1000, 1100, 1200, 1300]);
    expect(rec.take().map((x) => flagsStr(x.flags))).toEqual(['A', 'A', 'A', 'AR']);
    expect(rec.closeReason).toBe('timeout');
    expect(stats.keepaliveTimeouts).toBe(1);
  });

  it('off by default: an idle connection has no deadline', () => {
    expect(open().c.nextDeadline()).toBeUndefined();
  });
});

describe('sequence numbers wrapping at 2^32', () => {
  it('both directions across the wrap, including out-of-order and SACK', () => {
    const iss = 0xffff_ff00;
    const giss = 0xffff_ffa0;
    const { c, rec } = open({}, { mss: 100 }, true, { ack: (iss + 1) >>> 0, seq: (giss + 1) >>> 0, window: 0xffff }, iss, giss);
    expect(c.state).toBe('established');
    const data = bytes(600);
    c.write(data, 0, 600, 1);
    const out = rec.take();
    expect(concat(out.map((x) => x.payload))).toEqual(data);
    expect(out.at(-1)!.seq).toBe((iss + 1 + 500) >>> 0);
    const g = (giss + 1) >>> 0;
    c.input(guestSeg({ flags: F.ACK, seq: (g + 100) >>> 0, ack: (iss + 601) >>> 0, payload: bytes(100, 100) }), 2);
    const [sack] = rec.take();
    expect(sack!.sack).toEqual([[(g + 100) >>> 0, (g + 200) >>> 0]]);
    c.input(guestSeg({ flags: F.ACK, seq: g, ack: (iss + 601) >>> 0, payload: bytes(100) }), 3);
    expect(rec.received()).toEqual(bytes(200));
    expect(c.sendQueued).toBe(0);
    expect(rec.take().at(-1)!.ack).toBe((g + 200) >>> 0);
  });
});
