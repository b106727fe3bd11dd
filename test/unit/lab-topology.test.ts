/**
 * labs/lib/topology.ts on fixed API snapshots: what the picture shows, in text and SVG, comes from
 * the API's answers and nothing else.
 */
import { describe, expect, test } from 'vitest';
import { renderSvg, renderText, topologyModel, type TopologySnapshot } from '../../labs/lib/topology.ts';

/** GET /config, /leases, /forwards, /flows of vmnat during the nat lab (one outbound flow added). */
const SNAPSHOT: TopologySnapshot = {
  config: {
    link: { kind: 'socket', path: '/tmp/vmnat-lab-nat-gRPXHB/net.sock' },
    network: '10.0.2.0/24', netmask: '255.255.255.0', gateway: '10.0.2.2', dns: '10.0.2.3',
    first_lease: '10.0.2.15', last_lease: '10.0.2.254', mtu: 1500, dhcp_lease_time_s: 86400, dhcp_static: {},
    dns_search: [], domain: null, dns_mode: 'forward', dns_servers: ['127.0.0.1:40039'], dns_hosts: 0,
    host_loopback: true, udp_timeout_s: 60, max_flows: 16384, pcap_file: null, log_level: 'info',
  },
  leases: [{ ip: '10.0.2.15', mac: '52:54:00:12:34:56', state: 'bound', static: false, expires_in_s: 86396 }],
  forwards: [
    { name: 'ssh', proto: 'tcp', host_addr: '127.0.0.1', host_port: 2222, guest_addr: null, guest_port: 22, port_count: 1, tcp_accepted: 1, tcp_active: 1, udp_flows: 0 },
  ],
  flows: [
    { proto: 'tcp', guest: '10.0.2.15:22', remote: '10.0.2.2:53741', host: '127.0.0.1:52946', host_local: '127.0.0.1:2222', state: 'established', bytes_from_guest: 75, bytes_to_guest: 20, age_s: 1, forward: 'ssh' },
    { proto: 'tcp', guest: '10.0.2.15:47860', remote: '10.0.2.2:46765', host: '127.0.0.1:46765', host_local: '127.0.0.1:50848', state: 'established', bytes_from_guest: 77, bytes_to_guest: 0, age_s: 0 },
  ],
};

/** Three guests on isolated ports (the isolation lab's snapshot, trimmed). */
const ISOLATED: TopologySnapshot = {
  config: {
    ...SNAPSHOT.config,
    links: [1, 2, 3].map((n) => ({ kind: 'socket', path: `/tmp/lab/vm${n}.sock` })),
    isolate: true,
  },
  leases: [3, 1, 2].map((n) => ({ ip: `10.0.2.${14 + n}`, mac: `52:54:00:00:00:0${n}`, hostname: `vm${n}`, state: 'bound' as const, static: true, expires_in_s: 86389 })),
  forwards: [],
  flows: [],
};

const EMPTY: TopologySnapshot = {
  config: { ...SNAPSHOT.config, host_loopback: false, dns_servers: [], link: { kind: 'tap', name: 'tap0' } },
  leases: [],
  forwards: [],
  flows: [],
};

describe('topologyModel', () => {
  test('takes addresses, forwards and flows from the snapshot', () => {
    const m = topologyModel(SNAPSHOT);
    expect(m).toMatchObject({
      network: '10.0.2.0/24', gateway: '10.0.2.2', dns: '10.0.2.3', dnsUpstream: '127.0.0.1:40039',
      gatewayLeadsTo: '127.0.0.1', leaseRange: '10.0.2.15..10.0.2.254', link: 'socket /tmp/vmnat-lab-nat-gRPXHB/net.sock',
    });
    expect(m.guests).toEqual([{ ip: '10.0.2.15', ipv6: [], prefix: '24', mac: '52:54:00:12:34:56', hostname: undefined, lease: 'bound, 86396 s left' }]);
    expect(m.forwards).toEqual([{ name: 'ssh', proto: 'tcp', host: '127.0.0.1:2222', guest: '(lease):22', active: 1 }]);
    expect(m.flows.map((f) => f.hostSocket)).toEqual(['127.0.0.1:2222 <- 127.0.0.1:52946', '127.0.0.1:50848 -> 127.0.0.1:46765']);
  });

  test('several links and the switch mode, when the API reports them; guests in address order', () => {
    const m = topologyModel(ISOLATED);
    expect(m.link).toBe('3 × socket (one switch port each)');
    expect(m.switchMode).toBe('isolated');
    expect(m.guests.map((g) => `${g.hostname} ${g.ip} ${g.lease}`)).toEqual([
      'vm1 10.0.2.15 bound (static), 86389 s left',
      'vm2 10.0.2.16 bound (static), 86389 s left',
      'vm3 10.0.2.17 bound (static), 86389 s left',
    ]);
    expect(topologyModel({ ...ISOLATED, config: { ...ISOLATED.config, isolate: false } }).switchMode).toBe('shared');
    expect(topologyModel(SNAPSHOT).switchMode).toBeUndefined();
    const text = renderText(m);
    expect(text).toContain('│ switch  isolated: no guest-to-guest');
    expect((text.match(/^┌─ vm\d /gm) ?? []).length).toBe(3);
    // In the SVG every guest box is wired to vmnat: one line guest→vmnat→host, one bend per further guest.
    const svg = renderSvg(m);
    expect((svg.match(/<line [^>]*class="wire"/g) ?? []).length).toBe(2);
    expect((svg.match(/<polyline [^>]*class="wire"/g) ?? []).length).toBe(2);
    expect(svg).toContain('isolated: no guest-to-guest');
  });

  test('an empty network says so instead of inventing boxes', () => {
    const m = topologyModel(EMPTY);
    expect(m.guests).toEqual([]);
    expect(m.gatewayLeadsTo).toBeUndefined();
    expect(m.dnsUpstream).toBe('host resolv.conf');
    expect(m.link).toBe('tap tap0');
  });
});

describe('renderText', () => {
  const text = renderText(topologyModel(SNAPSHOT));
  const lines = text.split('\n');

  test('three columns joined by one wire, every box closed', () => {
    expect(lines[0]).toMatch(/^GUESTS\s+VMNAT\s+HOST$/);
    expect(lines[1]).toMatch(/^┌─ guest ─+┐\s+┌─ NAT 10\.0\.2\.0\/24 ─+┐\s+┌─ this machine ─+┐$/);
    expect(lines[2]).toMatch(/^│ eth0 10\.0\.2\.15\/24\s+│────│ link\s+socket \S+net\.sock\s+│────│ loopback 127\.0\.0\.1\s+│$/);
    expect(text).toContain('│ gateway 10.0.2.2 = host 127.0.0.1');
    expect(text).toContain('│ dns     10.0.2.3 -> 127.0.0.1:40039');
    expect(text).toContain('│ listen tcp 127.0.0.1:2222 (ssh)');
    // Box rows of one column line up: every │ of the guest box is at the same column.
    const guestRows = lines.slice(2, 7);
    expect(new Set(guestRows.map((l) => l.indexOf('│', 1))).size).toBe(1);
    expect(lines.filter((l) => l.startsWith('└')).length).toBe(1);
  });

  test('forwards and flows listed below, with the host sockets', () => {
    expect(text).toContain('forwards (host -> guest):\n  ssh: tcp 127.0.0.1:2222 -> (lease):22  (1 active)');
    expect(text).toContain('  tcp 10.0.2.15:22 <-> 10.0.2.2:53741 = 127.0.0.1:2222 <- 127.0.0.1:52946 established [forward ssh]');
    expect(text).toContain('  tcp 10.0.2.15:47860 <-> 10.0.2.2:46765 = 127.0.0.1:50848 -> 127.0.0.1:46765 established');
  });

  test('empty snapshot', () => {
    const t = renderText(topologyModel(EMPTY));
    expect(t).toContain('(no guest has leased)');
    expect(t).toContain('forwards: none');
    expect(t).toContain('open flows: none');
    expect(t).toContain('loopback (not reachable: --no-host-loopback)');
  });
});

describe('renderSvg', () => {
  const svg = renderSvg(topologyModel(SNAPSHOT));

  test('a standalone SVG document naming the addresses, with text escaped', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg" ')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('>eth0 10.0.2.15/24<');
    expect(svg).toContain('>dns     10.0.2.3 -&gt; 127.0.0.1:40039<');
    expect(svg).toContain('127.0.0.1:2222 &lt;- 127.0.0.1:52946');
    // No raw markup characters inside text nodes: every < starts a tag.
    for (const m of svg.matchAll(/<(?!\/?(svg|style|rect|text|line|polyline)\b)/g)) throw new Error(`stray < at ${m.index}`);
    expect((svg.match(/<text\b/g) ?? []).length).toBe((svg.match(/<\/text>/g) ?? []).length);
  });

  test('three boxes and two wires; the canvas holds the widest line', () => {
    expect((svg.match(/class="box"/g) ?? []).length).toBe(3);
    expect((svg.match(/class="wire"/g) ?? []).length).toBe(2);
    const width = Number(/<svg [^>]*width="(\d+)"/.exec(svg)![1]);
    const longest = Math.max(...[...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!.replace(/&\w+;/g, '_').length));
    expect(width).toBeGreaterThanOrEqual(longest * 7.8);
  });
});
