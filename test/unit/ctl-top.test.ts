/**
 * `vmnat ctl top`'s arithmetic and layout (src/ctl-top.ts) on made-up samples: rates are counter
 * changes over the time between samples, per port, per flow and per forward (the sum of its
 * flows); a flow new since the last sample counts over its age; the busiest flow comes first and
 * the flow list is cut to the screen's height.
 */
import { describe, expect, it } from 'vitest';
import { TopModel, formatRate, renderTop, type TopSample } from '../../src/ctl-top.ts';
import type { ApiFlow, ApiPort } from '../../src/api/server.ts';
import type { ForwardListItem } from '../../src/api/client.ts';

const port = (rx: number, tx: number): ApiPort => ({ id: 1, transport: 'socket', path: '/tmp/x.sock', mac: '52:54:00:12:34:56', ip: '10.0.2.15', address_source: 'dhcp', hostname: 'vm1', rx_frames: 0, rx_bytes: rx, tx_frames: 0, tx_bytes: tx, drops: {} });
const flow = (guest: string, from: number, to: number, extra: Partial<ApiFlow> = {}): ApiFlow => ({ proto: 'tcp', guest, remote: '10.0.2.2:80', state: 'established', bytes_from_guest: from, bytes_to_guest: to, age_s: 10, ...extra });
const fwd: ForwardListItem = { name: 'web', proto: 'tcp', host_addr: '127.0.0.1', host_port: 8080, guest_addr: null, guest_port: 80, port_count: 1, tcp_accepted: 2, tcp_active: 2, udp_flows: 0 };
const sample = (at: number, ports: ApiPort[], flows: ApiFlow[], forwards: ForwardListItem[] = []): TopSample => ({ at, ports, flows, forwards, uptimeS: 65 });

describe('TopModel', () => {
  it('turns counter changes into bytes per second each way', () => {
    const m = new TopModel();
    const first = m.update(sample(0, [port(1000, 2000)], [flow('10.0.2.15:1', 0, 0)]));
    expect(first.ports[0]!.rate).toEqual({ fromGuest: 0, toGuest: 0 }); // nothing to compare with yet
    const v = m.update(sample(2000, [port(3000, 8000)], [flow('10.0.2.15:1', 4000, 1000)]));
    expect(v.intervalS).toBe(2);
    expect(v.ports[0]!.rate).toEqual({ fromGuest: 1000, toGuest: 3000 });
    expect(v.flows[0]!.rate).toEqual({ fromGuest: 2000, toGuest: 500 });
    expect(v.total).toEqual({ fromGuest: 1000, toGuest: 3000 });
  });

  it('counts a new flow over its age, sums a forward\'s flows, and puts the busiest flow first', () => {
    const m = new TopModel();
    m.update(sample(0, [port(0, 0)], [flow('10.0.2.15:1', 0, 0)], [fwd]));
    const v = m.update(
      sample(1000, [port(0, 0)], [
        flow('10.0.2.15:1', 100, 100),
        flow('10.0.2.15:80', 500, 0, { forward: 'web', age_s: 0.5, remote: '10.0.2.2:40000' }),
        flow('10.0.2.15:80', 0, 3000, { forward: 'web', age_s: 2, remote: '10.0.2.2:40001' }),
      ], [fwd]),
    );
    // The first 'web' flow is 0.5 s old: 500 bytes in 0.5 s; the second is older than the
    // interval but was not in the last sample either: its bytes count over the interval.
    expect(v.flows.map((f) => [f.flow.remote, f.rate.fromGuest, f.rate.toGuest])).toEqual([
      ['10.0.2.2:40001', 0, 3000],
      ['10.0.2.2:40000', 1000, 0],
      ['10.0.2.2:80', 100, 100],
    ]);
    expect(v.forwards[0]).toMatchObject({ rate: { fromGuest: 1000, toGuest: 3000 }, bytes: { fromGuest: 500, toGuest: 3000 } });
  });
});

describe('renderTop', () => {
  it('lays out the summary, the three sections and cuts the flows to the screen', () => {
    const m = new TopModel();
    const flows = Array.from({ length: 30 }, (_, i) => flow(`10.0.2.15:${1000 + i}`, i * 1000, 0));
    m.update(sample(0, [port(0, 0)], flows.map((f) => ({ ...f, bytes_from_guest: 0 }))));
    const lines = renderTop(m.update(sample(1000, [port(435_000, 0)], flows, [fwd])), { width: 200, height: 20 });
    expect(lines.length).toBeLessThanOrEqual(20);
    expect(lines[0]).toBe('vmnat  ·  up 1m05s  ·  1 port  ·  30 flows (tcp 30, udp 0, icmp 0)  ·  1 forward  ·  from guests 435 kB/s  ·  to guests 0 B/s');
    expect(lines).toContain('PORTS');
    expect(lines.find((l) => l.startsWith('FLOWS'))).toMatch(/^FLOWS \(busiest \d+ of 30\)$/);
    const firstFlow = lines[lines.findIndex((l) => l.startsWith('FLOWS')) + 2]!;
    expect(firstFlow).toContain('10.0.2.15:1029');
    expect(firstFlow).toContain('29.0 kB/s');
    expect(renderTop(m.update(sample(2000, [], [])), { width: 30 }).every((l) => l.length <= 30)).toBe(true);
  });

  it('formats rates in decimal units', () => {
    expect([0, 999, 1000, 1234567, 98_765_432, 2e9].map(formatRate)).toEqual(['0 B/s', '999 B/s', '1.0 kB/s', '1.2 MB/s', '98.8 MB/s', '2.0 GB/s']);
  });
});
