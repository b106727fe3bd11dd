/**
 * The picture at the end of each lab: guests, vmnat and the host, with the addresses in force,
 * the port forwards and the open flows, drawn from vmnat's own control API (GET /config, /leases,
 * /forwards, /flows) as text for the terminal and as an SVG file.
 *
 * Theory of operation: `snapshotFromApi()` makes the four calls; `topologyModel()` reduces the
 * snapshot to what the picture shows (a pure function, so the unit test feeds it a fixed
 * snapshot); `renderText()` and `renderSvg()` lay the model out. The layout is three columns —
 * guests on the left (one box per lease), vmnat in the middle (its network, gateway, DNS and
 * where they lead on the host), the host on the right (its loopback and the forward listeners) —
 * with the forwards and flows listed below, since a flow names two or three addresses and reads
 * better as a line than as an arrow across boxes. Nothing here invents data: a box or line
 * appears only for what the API reported.
 */
import type { ApiClient, ForwardListItem } from '../../src/api/client.ts';
import type { ApiFlow, ApiLease } from '../../src/api/server.ts';

/** What the API said, as returned by its four GET calls. */
export interface TopologySnapshot {
  config: Record<string, unknown>;
  leases: ApiLease[];
  forwards: ForwardListItem[];
  flows: ApiFlow[];
}

export interface TopologyGuest {
  ip: string;
  /** IPv6 addresses vmnat saw the guest use in its prefix (SLAAC, DHCPv6). */
  ipv6: string[];
  prefix: string;
  mac: string;
  hostname: string | undefined;
  lease: string;
  /** More lines for its box (a second network card the lab knows of). */
  more?: string[];
}

export interface TopologyForward {
  name: string;
  proto: string;
  host: string;
  guest: string;
  active: number;
}

export interface TopologyFlow {
  proto: string;
  guest: string;
  remote: string;
  hostSocket: string | undefined;
  state: string | undefined;
  forward: string | undefined;
}

export interface TopologyModel {
  network: string;
  /** The guests' transports: one line for one link, a count for several. */
  link: string;
  /** The switch between guests, when the API says (`isolate`): shared segment or isolated ports. */
  switchMode: 'shared' | 'isolated' | undefined;
  gateway: string;
  dns: string;
  /** Where the guest's DNS queries go on the host (`127.0.0.1:5353`, or the host's resolvers). */
  dnsUpstream: string;
  /** Where the gateway address leads (`127.0.0.1`), or undefined when --no-host-loopback. */
  gatewayLeadsTo: string | undefined;
  leaseRange: string;
  /** Host-only mode (GET /config `mode`): the host's TAP and address, vmnat's DHCP server. */
  hostOnly?: { hostIf: string; hostIp: string; dhcpServer: string };
  /** The IPv6 side, when the network has one: prefix, gateway (= host ::1), DNS. */
  ipv6: { prefix: string; gateway: string; dns: string; router: string } | undefined;
  guests: TopologyGuest[];
  forwards: TopologyForward[];
  flows: TopologyFlow[];
}

/** Reads the four endpoints the picture is drawn from. */
export async function snapshotFromApi(client: ApiClient): Promise<TopologySnapshot> {
  const [config, leases, forwards, flows] = await Promise.all([client.config(), client.leases(), client.forwards(), client.flows()]);
  return { config, leases, forwards, flows };
}

function str(v: unknown, fallback = '?'): string {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : fallback;
}

function linkText(link: unknown): string {
  if (typeof link !== 'object' || link === null) return '?';
  const l = link as Record<string, unknown>;
  const kind = str(l['kind']);
  const where = l['path'] ?? l['name'] ?? l['fd'] ?? undefined;
  return where === undefined ? kind : `${kind} ${str(where)}`;
}

/** `socket /path` for one link; `3 × socket` for several (each is a switch port). */
function linksText(config: Record<string, unknown>): string {
  const links = config['links'];
  if (Array.isArray(links) && links.length > 1) {
    const kinds = [...new Set(links.map((l) => (typeof l === 'object' && l !== null ? str((l as Record<string, unknown>)['kind']) : '?')))];
    return `${links.length} × ${kinds.join('/')} (one switch port each)`;
  }
  return linkText(config['link']);
}

function ports(first: number, count: number): string {
  return count > 1 ? `${first}..${first + count - 1}` : String(first);
}

function hostAddr(a: string): string {
  return a.includes(':') ? `[${a}]` : a;
}

function ipv6Of(v: unknown): TopologyModel['ipv6'] {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  return { prefix: str(o['prefix']), gateway: str(o['gateway']), dns: str(o['dns']), router: str(o['router']) };
}

/** The parts of a snapshot the picture shows. */
export function topologyModel(s: TopologySnapshot): TopologyModel {
  const network = str(s.config['network']);
  const prefix = network.includes('/') ? network.slice(network.indexOf('/') + 1) : '?';
  const dnsServers = Array.isArray(s.config['dns_servers']) ? s.config['dns_servers'].map((x) => str(x)) : [];
  const dnsMode = str(s.config['dns_mode'], 'forward');
  return {
    network,
    link: linksText(s.config),
    switchMode: typeof s.config['isolate'] === 'boolean' ? (s.config['isolate'] ? 'isolated' : 'shared') : undefined,
    gateway: str(s.config['gateway']),
    dns: str(s.config['dns']),
    dnsUpstream: dnsMode === 'host' ? 'host resolver (getaddrinfo)' : dnsServers.length > 0 ? dnsServers.join(', ') : 'host resolv.conf',
    gatewayLeadsTo: s.config['host_loopback'] === false ? undefined : '127.0.0.1',
    leaseRange: `${str(s.config['first_lease'])}..${str(s.config['last_lease'])}`,
    ...(s.config['configured_mode'] === 'host' && typeof s.config['host_if'] === 'string'
      ? { hostOnly: { hostIf: str(s.config['host_if']), hostIp: str(s.config['host_ip']), dhcpServer: str(s.config['dhcp_server']) } }
      : {}),
    ipv6: ipv6Of(s.config['ipv6']),
    guests: [...s.leases]
      .sort((a, b) => a.ip.localeCompare(b.ip, 'en', { numeric: true }))
      .map((l) => ({
        ip: l.ip,
        ipv6: l.ipv6 ?? [],
        prefix,
        mac: l.mac,
        hostname: l.hostname,
        lease: `${l.state}${l.static ? ' (static)' : ''}${l.expires_in_s === null ? ', never expires' : `, ${l.expires_in_s} s left`}`,
      })),
    forwards: s.forwards.map((f) => ({
      name: f.name,
      proto: f.proto,
      host: `${hostAddr(f.host_addr)}:${ports(f.host_port, f.port_count)}`,
      guest: `${f.guest_addr === null ? '(lease)' : hostAddr(f.guest_addr)}:${ports(f.guest_port, f.port_count)}`,
      active: f.proto === 'tcp' ? f.tcp_active : f.udp_flows,
    })),
    flows: s.flows.map((f) => ({
      proto: f.proto,
      guest: f.guest,
      remote: f.remote,
      hostSocket:
        f.host === undefined ? undefined : f.host_local === undefined ? f.host : f.forward !== undefined ? `${f.host_local} <- ${f.host}` : `${f.host_local} -> ${f.host}`,
      state: f.state,
      forward: f.forward,
    })),
  };
}

// ── the three boxes, shared by both renderings ─────────────────────────────────────────────

interface Column {
  heading: string;
  boxes: { title: string; lines: string[] }[];
}

function columns(m: TopologyModel): Column[] {
  if (m.hostOnly !== undefined) return hostOnlyColumns(m, m.hostOnly);
  const guests: Column = {
    heading: 'guests',
    boxes:
      m.guests.length === 0
        ? [{ title: 'no lease yet', lines: ['(no guest has leased)'] }]
        : m.guests.map((g) => ({
            title: g.hostname ?? 'guest',
            lines: [
              `eth0 ${g.ip}/${g.prefix}`,
              ...g.ipv6.map((a) => `eth0 ${a}/64`),
              `mac  ${g.mac}`,
              `via  ${m.gateway}`,
              ...(m.ipv6 !== undefined && g.ipv6.length > 0 ? [`via  ${m.ipv6.router} (IPv6)`] : []),
              `dns  ${m.dns}`,
              ...(m.ipv6 !== undefined && g.ipv6.length > 0 ? [`dns  ${m.ipv6.dns}`] : []),
              `lease ${g.lease}`,
            ],
          })),
  };
  const vmnat: Column = {
    heading: 'vmnat',
    boxes: [
      {
        title: `NAT ${m.network}`,
        lines: [
          `link    ${m.link}`,
          ...(m.switchMode === undefined ? [] : [`switch  ${m.switchMode === 'isolated' ? 'isolated: no guest-to-guest' : 'shared: guests reach each other'}`]),
          `gateway ${m.gateway}${m.gatewayLeadsTo !== undefined ? ` = host ${m.gatewayLeadsTo}` : ''}`,
          `dns     ${m.dns} -> ${m.dnsUpstream}`,
          `dhcp    ${m.leaseRange}`,
          ...(m.ipv6 === undefined
            ? []
            : [
                `ipv6    ${m.ipv6.prefix} (RA from ${m.ipv6.router})`,
                `gw6     ${m.ipv6.gateway}${m.gatewayLeadsTo !== undefined ? ' = host ::1' : ''}`,
                `dns6    ${m.ipv6.dns} -> ${m.dnsUpstream}`,
              ]),
        ],
      },
    ],
  };
  const hostLines = [`loopback ${m.gatewayLeadsTo ?? '(not reachable: --no-host-loopback)'}${m.ipv6 !== undefined && m.gatewayLeadsTo !== undefined ? ', ::1' : ''}`];
  for (const f of m.forwards) hostLines.push(`listen ${f.proto} ${f.host} (${f.name})`);
  const host: Column = { heading: 'host', boxes: [{ title: 'this machine', lines: hostLines }] };
  return [guests, vmnat, host];
}

/** Host-only: no gateway, no DNS, no NAT; the host is on the guests' network through its TAP. */
function hostOnlyColumns(m: TopologyModel, h: NonNullable<TopologyModel['hostOnly']>): Column[] {
  const guests: Column = {
    heading: 'guests',
    boxes:
      m.guests.length === 0
        ? [{ title: 'no lease yet', lines: ['(no guest has leased)'] }]
        : m.guests.map((g) => ({ title: g.hostname ?? 'guest', lines: [`eth0 ${g.ip}/${g.prefix}`, `mac  ${g.mac}`, 'no default route', `lease ${g.lease}`, ...(g.more ?? [])] })),
  };
  const vmnat: Column = {
    heading: 'vmnat',
    boxes: [
      {
        title: `host-only ${m.network}`,
        lines: [
          `link    ${m.link}`,
          ...(m.switchMode === undefined ? [] : [`switch  ${m.switchMode === 'isolated' ? 'isolated: no guest-to-guest' : 'shared: guests reach each other'}`]),
          `dhcp    ${h.dhcpServer}: ${m.leaseRange}`,
          'no gateway, no DNS, no NAT',
          `host    port ${h.hostIf}`,
        ],
      },
    ],
  };
  const host: Column = { heading: 'host', boxes: [{ title: 'this machine', lines: [`${h.hostIf} ${h.hostIp}`, 'routes nothing for the guests'] }] };
  return [guests, vmnat, host];
}

function listLines(m: TopologyModel): string[] {
  const out: string[] = [];
  out.push(m.forwards.length === 0 ? 'forwards: none' : 'forwards (host -> guest):');
  for (const f of m.forwards) out.push(`  ${f.name}: ${f.proto} ${f.host} -> ${f.guest}  (${f.active} active)`);
  out.push(m.flows.length === 0 ? 'open flows: none' : 'open flows (guest end <-> remote end = host socket):');
  for (const f of m.flows) {
    const via = f.forward !== undefined ? ` [forward ${f.forward}]` : '';
    out.push(`  ${f.proto} ${f.guest} <-> ${f.remote}${f.hostSocket !== undefined ? ` = ${f.hostSocket}` : ''}${f.state !== undefined ? ` ${f.state}` : ''}${via}`);
  }
  return out;
}

// ── text ────────────────────────────────────────────────────────────────────────────────────

/** Box-drawing text; columns joined by a wire on each box's second line. */
export function renderText(m: TopologyModel): string {
  const cols = columns(m).map((c) => {
    const width = Math.max(c.heading.length, ...c.boxes.flatMap((b) => [b.title.length + 2, ...b.lines.map((l) => l.length)])) + 4;
    const rows: string[] = [c.heading.toUpperCase().padEnd(width)];
    for (const b of c.boxes) {
      const inner = width - 2;
      rows.push(`┌─ ${b.title} ${'─'.repeat(Math.max(0, inner - b.title.length - 3))}┐`);
      for (const l of b.lines) rows.push(`│ ${l.padEnd(inner - 1)}│`);
      rows.push(`└${'─'.repeat(inner)}┘`);
    }
    return { width, rows };
  });
  const height = Math.max(...cols.map((c) => c.rows.length));
  const out: string[] = [];
  for (let r = 0; r < height; r++) {
    // Row 2 is each first box's first line: the wire from guest to vmnat to host runs there.
    const gap = r === 2 ? '────' : '    ';
    out.push(cols.map((c) => c.rows[r] ?? ' '.repeat(c.width)).join(gap).trimEnd());
  }
  out.push('', ...listLines(m));
  return out.join('\n');
}

// ── SVG ─────────────────────────────────────────────────────────────────────────────────────

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const CHAR_W = 7.8; // monospace 13 px
const LINE_H = 18;

/** A standalone SVG (monospace text, no external resources). */
export function renderSvg(m: TopologyModel): string {
  const cols = columns(m);
  const pad = 16;
  const gapX = 48;
  const parts: string[] = [];
  let x = pad;
  let bottom = 0;
  const wireY: number[] = [];
  const colX: { left: number; right: number }[] = [];
  /** The wire height of every guest box after the first: each gets its own wire to vmnat. */
  const moreGuests: number[] = [];
  for (const c of cols) {
    const width = Math.ceil(Math.max(c.heading.length, ...c.boxes.flatMap((b) => [b.title.length, ...b.lines.map((l) => l.length)])) * CHAR_W) + 2 * pad;
    let y = pad + LINE_H;
    parts.push(`<text x="${x}" y="${y}" class="h">${esc(c.heading.toUpperCase())}</text>`);
    y += 8;
    for (const b of c.boxes) {
      const h = (b.lines.length + 1) * LINE_H + pad;
      parts.push(`<rect x="${x}" y="${y}" width="${width}" height="${h}" rx="6" class="box"/>`);
      parts.push(`<text x="${x + pad / 2}" y="${y + LINE_H}" class="t">${esc(b.title)}</text>`);
      b.lines.forEach((l, i) => parts.push(`<text x="${x + pad / 2}" y="${y + LINE_H * (i + 2)}">${esc(l)}</text>`));
      if (wireY.length < colX.length + 1) wireY.push(y + LINE_H * 2 - 4);
      else if (colX.length === 0) moreGuests.push(y + LINE_H * 2 - 4);
      y += h + 12;
    }
    colX.push({ left: x, right: x + width });
    bottom = Math.max(bottom, y);
    x += width + gapX;
  }
  for (let i = 0; i + 1 < colX.length; i++) {
    const yw = wireY[i + 1] ?? wireY[i] ?? pad;
    parts.push(`<line x1="${colX[i]!.right}" y1="${yw}" x2="${colX[i + 1]!.left}" y2="${yw}" class="wire"/>`);
  }
  // Further guests: a wire from each box's first line into vmnat's box, which they all share.
  const g = colX[0];
  const v = colX[1];
  const vy = wireY[1] ?? wireY[0];
  if (g !== undefined && v !== undefined && vy !== undefined) {
    for (const gy of moreGuests) parts.push(`<polyline points="${g.right},${gy} ${g.right + gapX / 2},${gy} ${g.right + gapX / 2},${vy}" class="wire" fill="none"/>`);
  }
  let y = bottom + LINE_H;
  let widest = x - gapX + pad;
  for (const l of listLines(m)) {
    parts.push(`<text x="${pad}" y="${y}"${l.startsWith(' ') ? '' : ' class="t"'} xml:space="preserve">${esc(l)}</text>`);
    widest = Math.max(widest, pad * 2 + Math.ceil(l.length * CHAR_W));
    y += LINE_H;
  }
  const height = y + pad;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${widest}" height="${height}" viewBox="0 0 ${widest} ${height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="13">`,
    '<style>.box{fill:#f6f8fa;stroke:#57606a;stroke-width:1.5}.wire{stroke:#0969da;stroke-width:3}.h{font-weight:bold;fill:#57606a}.t{font-weight:bold}text{fill:#1f2328}</style>',
    `<rect width="${widest}" height="${height}" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
