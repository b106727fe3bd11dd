/**
 * DNS over TCP at the DNS address (src/dns/tcp-endpoint.ts): the endpoint keeps copies, not views
 * into write slabs; returns receive credit only for bytes it consumed; honours the flow's
 * backpressure; and the service caps connections.
 */
import { describe, expect, test } from 'vitest';
import { DnsTcpEndpoint, DnsTcpService, MAX_OUTSTANDING } from '../../src/dns/tcp-endpoint.ts';
import type { HostEvents } from '../../src/nat/tcp.ts';

type Reply = (answer: Uint8Array) => void;

/** A forwarder that records each query (copied at once) and lets the test answer it later. */
class FakeForwarder {
  readonly queries: { msg: Buffer; reply: Reply }[] = [];
  query(msg: Uint8Array, transport: 'udp' | 'tcp', reply: Reply): void {
    expect(transport).toBe('tcp');
    this.queries.push({ msg: Buffer.from(msg), reply });
  }
}

/** The flow side: records answers; `accept` false mimics a zero window (the flow pauses us). */
class FakeFlow implements HostEvents {
  readonly got: Buffer[] = [];
  ended = false;
  accept = true;
  endpoint: DnsTcpEndpoint | undefined;
  data(chunk: Uint8Array): boolean {
    this.got.push(Buffer.from(chunk));
    if (!this.accept) this.endpoint?.pause();
    return this.accept;
  }
  end(): void {
    this.ended = true;
  }
  error(): void {}
}

function framed(body: Buffer): Buffer {
  const out = Buffer.alloc(2 + body.length);
  out.writeUInt16BE(body.length, 0);
  body.copy(out, 2);
  return out;
}

/** A query-shaped message whose bytes depend on `n`. */
function message(n: number, len = 40): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (n * 13 + i * 7) & 0xff;
  return b;
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('DnsTcpEndpoint', () => {
  test('a message split across writes is intact even when the first write\'s slab is reused', async () => {
    const fwd = new FakeForwarder();
    const flow = new FakeFlow();
    const ep = new DnsTcpEndpoint(fwd, flow);
    const wire = framed(message(1, 300));
    // One "slab": the endpoint gets a view into it, and the memory is reused once `done` ran.
    const slab = Buffer.alloc(4096);
    wire.copy(slab, 0, 0, 100);
    let released = false;
    ep.write(slab.subarray(0, 100), () => (released = true));
    await tick();
    expect(released).toBe(true); // held as the incomplete head message: consumed, credited
    slab.fill(0xee); // another flow's bytes land in the released slab
    wire.copy(slab, 0, 100);
    ep.write(slab.subarray(0, wire.length - 100), () => undefined);
    expect(fwd.queries).toHaveLength(1);
    expect(fwd.queries[0]!.msg.equals(message(1, 300))).toBe(true);
  });

  test('credit comes back only for consumed bytes: beyond the owed-answer cap, writes stay unacknowledged', async () => {
    const fwd = new FakeForwarder();
    const flow = new FakeFlow();
    const ep = new DnsTcpEndpoint(fwd, flow);
    let credited = 0;
    const total = MAX_OUTSTANDING + 8;
    for (let i = 0; i < total; i++) ep.write(framed(message(i)), () => credited++);
    await tick();
    expect(fwd.queries).toHaveLength(MAX_OUTSTANDING);
    expect(credited).toBe(MAX_OUTSTANDING);
    // Answering frees slots: the held queries are parsed and their credit returned.
    for (const q of fwd.queries.slice(0, 8)) q.reply(q.msg);
    await tick();
    expect(fwd.queries).toHaveLength(total);
    expect(credited).toBe(total);
  });

  test('answers wait while the flow is paused (zero window) and go out in order after resume', async () => {
    const fwd = new FakeForwarder();
    const flow = new FakeFlow();
    const ep = new DnsTcpEndpoint(fwd, flow);
    flow.endpoint = ep;
    for (let i = 0; i < 5; i++) ep.write(framed(message(i)), () => undefined);
    flow.accept = false;
    for (const q of fwd.queries) q.reply(q.msg);
    // The first answer was taken (and paused us); the other four wait in the endpoint.
    expect(flow.got).toHaveLength(1);
    flow.accept = true;
    ep.resume();
    expect(flow.got.map((g) => g.subarray(2).toString('hex'))).toEqual([0, 1, 2, 3, 4].map((i) => message(i).toString('hex')));
  });

  test('the guest\'s half-close ends our side after the last owed answer', async () => {
    const fwd = new FakeForwarder();
    const flow = new FakeFlow();
    const ep = new DnsTcpEndpoint(fwd, flow);
    ep.write(framed(message(7)), () => undefined);
    ep.end();
    expect(flow.ended).toBe(false);
    fwd.queries[0]!.reply(message(8));
    expect(flow.got).toHaveLength(1);
    expect(flow.ended).toBe(true);
  });
});

describe('DnsTcpService', () => {
  test('refuses connections beyond its cap and counts them; a closed one frees its slot', () => {
    const svc = new DnsTcpService(new FakeForwarder(), 2);
    const a = svc.open(new FakeFlow());
    const b = svc.open(new FakeFlow());
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    expect(svc.open(new FakeFlow())).toBeUndefined();
    expect(svc.stats.connectionLimit).toBe(1);
    a!.destroy();
    expect(svc.stats.connections).toBe(1);
    expect(svc.open(new FakeFlow())).toBeDefined();
  });
});
