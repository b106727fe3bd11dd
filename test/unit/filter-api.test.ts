/**
 * The filter through the control API and `vmnat ctl filter`, against a small in-memory backend
 * that holds a real FilterSet: what a user sees (rules, hits), that PUT swaps the set atomically
 * and a bad set leaves the old one in force, and that block events reach /events.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiServer, configToApi, type ApiBackend, type ApiFlow, type ApiLease, type FilterEvent, type FlowEvent, type LeaseEvent } from '../../src/api/server.ts';
import { ApiClient } from '../../src/api/client.ts';
import { FilterSet, blockEvent, type FilterFlow, type FilterJson } from '../../src/filter/filter.ts';
import { parseFilter } from '../../src/filter/rules.ts';
import { PortForwarder } from '../../src/portfwd/forwarder.ts';
import { parseArgs } from '../../src/config.ts';
import { runCtl, describeEvent } from '../../src/ctl.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';
import { FakeBackend } from './api-fakes.ts';
import { LoopbackDialer, waitFor } from './portfwd-fakes.ts';

const ip = (s: string): number => parseIpv4(s)!;
const NET = { network: ip('10.0.2.0'), netmask: ip('255.255.255.0') };
const START = '# start\nblock out proto tcp to 10.0.2.2 port 22\npass all\n';
const SSH: FilterFlow = { direction: 'out', proto: 'tcp', src: ip('10.0.2.15'), srcPort: 40000, dst: ip('10.0.2.2'), dstPort: 22 };
const WEB: FilterFlow = { direction: 'out', proto: 'tcp', src: ip('10.0.2.15'), srcPort: 40001, dst: ip('1.1.1.1'), dstPort: 80 };

/** The fake engine (leases, flows, forwards) plus the filter part of ApiBackend over a real FilterSet. */
class FilterBackend implements ApiBackend {
  readonly set = new FilterSet(parseFilter(START, 'start.conf'));
  readonly listeners = new Set<(e: LeaseEvent | FlowEvent | FilterEvent) => void>();
  private readonly base: FakeBackend;
  constructor(readonly forwards: PortForwarder) {
    this.base = new FakeBackend(forwards);
  }
  leases(): ApiLease[] {
    return this.base.leases();
  }
  flows(): ApiFlow[] {
    return this.base.flows();
  }
  stats(): Record<string, unknown> {
    return this.base.stats();
  }
  config(): Record<string, unknown> {
    return this.base.config();
  }
  subscribe(listener: (e: LeaseEvent | FlowEvent | FilterEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  filter(): FilterJson {
    return this.set.toJSON();
  }
  replaceFilter(text: string, source: string): FilterJson {
    this.set.replace(text, source);
    return this.set.toJSON();
  }
  /** What the engine does per new flow: check, and publish a block. */
  open(flow: FilterFlow): 'pass' | 'block' {
    const v = this.set.check(flow, NET);
    if (v.action === 'block') for (const l of this.listeners) l(blockEvent(flow, v));
    return v.action;
  }
}

let dir: string;
let sock: string;
let fwd: PortForwarder;
let backend: FilterBackend;
let api: ApiServer;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-filter-api-'));
  sock = path.join(dir, 'api.sock');
  fwd = new PortForwarder({ dialer: new LoopbackDialer() });
  backend = new FilterBackend(fwd);
  api = await ApiServer.listen({ path: sock, backend });
});
afterEach(async () => {
  await api.close();
  await fwd.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  json: unknown;
}

function request(method: string, urlPath: string, body?: string, headers: http.OutgoingHttpHeaders = {}, socketPath = sock): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: { Host: 'vmnat', ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode!, headers: res.headers, json: text === '' ? undefined : (JSON.parse(text) as unknown) });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const TEXT = { 'Content-Type': 'text/plain' };
const JSON_CT = { 'Content-Type': 'application/json' };

describe('GET /filter', () => {
  test('the rules in force, as text and structured, with their hits', async () => {
    backend.open(SSH);
    backend.open(SSH);
    backend.open(WEB);
    const r = await request('GET', '/filter');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      source: 'start.conf',
      text: START,
      version: 0,
      checks: 3,
      blocked: 2,
      unmatched: 0,
      rules: [
        { index: 0, line: 2, text: 'block out proto tcp from any to 10.0.2.2 port 22', action: 'block', direction: 'out', proto: 'tcp', peer: 'any', from: 'any', from_port: null, to: '10.0.2.2/32', to_port: [22, 22], hits: 2 },
        { index: 1, line: 3, text: 'pass all', action: 'pass', direction: 'both', proto: 'any', peer: 'any', from: 'any', from_port: null, to: 'any', to_port: null, hits: 1 },
      ],
    });
  });

  test('a backend without a filter answers 501, and it is not counted as an internal error', async () => {
    const other = path.join(dir, 'plain.sock');
    const plain = await ApiServer.listen({ path: other, backend: new FakeBackend(fwd) });
    try {
      const g = await request('GET', '/filter', undefined, {}, other);
      expect(g.status).toBe(501);
      expect(g.json).toEqual({ error: 'this vmnat has no filter rules to show or replace', code: 'not_implemented' });
      expect((await request('PUT', '/filter', 'block all\n', TEXT, other)).status).toBe(501);
      expect(plain.stats.internalError).toBe(0);
    } finally {
      await plain.close();
    }
  });

  test('other methods → 405 naming GET and PUT', async () => {
    const r = await request('DELETE', '/filter');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, PUT');
  });
});

describe('PUT /filter', () => {
  test('a text body replaces the set; new flows follow it at once', async () => {
    expect(backend.open(WEB)).toBe('pass');
    const r = await request('PUT', '/filter', 'block out proto tcp to any port 80\n', TEXT);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ source: 'filter', version: 1, text: 'block out proto tcp to any port 80\n', checks: 0, rules: [{ text: 'block out proto tcp from any to any port 80', hits: 0 }] });
    expect(backend.open(WEB)).toBe('block');
    expect(backend.open(SSH)).toBe('pass');
    expect((await request('GET', '/filter')).json).toMatchObject({ version: 1, checks: 2, blocked: 1, unmatched: 1 });
  });

  test('a JSON body {"rules", "source"}', async () => {
    const r = await request('PUT', '/filter', JSON.stringify({ rules: 'block local\n', source: 'ci.conf' }), JSON_CT);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ source: 'ci.conf', rules: [{ text: 'block local', peer: 'local' }] });
  });

  test('a bad set → 400 naming line and token; the old set and its hits stay in force', async () => {
    backend.open(SSH);
    const before = (await request('GET', '/filter')).json;
    const r = await request('PUT', '/filter', 'pass all\nblock out proto tcpp all\n', TEXT);
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ error: 'filter:2: unknown protocol "tcpp" (tcp, udp or icmp)', code: 'bad_filter' });
    const j = await request('PUT', '/filter', JSON.stringify({ rules: 'block to 10.0.2.300\n', source: 'mine.conf' }), JSON_CT);
    expect(j.json).toEqual({ error: 'mine.conf:1: bad address "10.0.2.300" (expected ADDR[/N], any or local)', code: 'bad_filter' });
    expect((await request('GET', '/filter')).json).toEqual(before);
    expect(backend.open(SSH)).toBe('block');
    expect(api.stats.badRequest).toBe(2);
  });

  test('an empty body clears the rules', async () => {
    const r = await request('PUT', '/filter', '', TEXT);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ rules: [], version: 1 });
    expect(backend.open(SSH)).toBe('pass');
  });

  test('malformed JSON, JSON without rules, a bad source → 400 and nothing changes', async () => {
    const bad = await request('PUT', '/filter', '{"rules": ', JSON_CT);
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ code: 'bad_json' });
    const noRules = await request('PUT', '/filter', JSON.stringify({ text: 'block all' }), JSON_CT);
    expect(noRules.json).toEqual({ error: 'expected a JSON object {"rules": "<rule text>"} (or send the rules as text/plain)', code: 'bad_request' });
    const arr = await request('PUT', '/filter', JSON.stringify(['block all']), JSON_CT);
    expect(arr.status).toBe(400);
    const src = await request('PUT', '/filter', JSON.stringify({ rules: 'block all', source: 'a\nb' }), JSON_CT);
    expect(src.json).toEqual({ error: '"source" must be a one-line name of 1..256 characters', code: 'bad_request' });
    expect(backend.set.version).toBe(0);
  });

  test('the client helpers', async () => {
    const c = new ApiClient(sock);
    expect((await c.setFilter('block in all\n', 'x.conf')).source).toBe('x.conf');
    expect((await c.filter()).rules.map((r) => r.text)).toEqual(['block in all']);
  });
});

describe('block events and /config', () => {
  test('a block reaches /events as a filter event', async () => {
    const c = new ApiClient(sock);
    const got: Record<string, unknown>[] = [];
    const ac = new AbortController();
    const done = c.events((e) => got.push(e), ac.signal);
    await waitFor(() => backend.listeners.size === 1);
    backend.open(WEB); // passes: no event
    backend.open(SSH);
    await waitFor(() => got.length === 2); // the replayed lease, then the block
    ac.abort();
    await done;
    expect(got[1]).toMatchObject({ type: 'filter', event: 'block', direction: 'out', proto: 'tcp', src: '10.0.2.15:40000', dst: '10.0.2.2:22', rule: 'block out proto tcp from any to 10.0.2.2 port 22', rule_index: 0, line: 2 });
    expect(describeEvent({ ...got[1]!, time: '2026-01-01T12:34:56.000Z' })).toBe('12:34:56 filter block out tcp 10.0.2.15:40000 -> 10.0.2.2:22 (line 2: block out proto tcp from any to 10.0.2.2 port 22)');
  });

  test('/config names the --filter file', () => {
    const f = path.join(dir, 'f.conf');
    fs.writeFileSync(f, 'block all\n');
    const out = parseArgs(['--filter', f]);
    if (out.action !== 'run') throw new Error('expected a config');
    expect(out.config.filter?.rules).toHaveLength(1);
    expect(configToApi(out.config)['filter']).toBe(f);
    const none = parseArgs([]);
    if (none.action !== 'run') throw new Error('expected a config');
    expect(configToApi(none.config)['filter']).toBeNull();
  });
});

// ── vmnat ctl filter ────────────────────────────────────────────────────────────────────────

interface Run {
  code: number;
  out: string;
  err: string;
}

async function ctl(args: string[], stdin?: string): Promise<Run> {
  let out = '';
  let err = '';
  const code = await runCtl(['--api-socket', sock, ...args], {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    env: {},
    ...(stdin !== undefined ? { readStdin: () => Promise.resolve(stdin) } : {}),
  });
  return { code, out, err };
}

describe('vmnat ctl filter', () => {
  test('shows the rules with their hits as a table, then the totals', async () => {
    backend.open(SSH);
    backend.open(SSH);
    backend.open(WEB);
    const r = await ctl(['filter']);
    expect(r.code).toBe(0);
    expect(r.out.trimEnd().split('\n')).toEqual([
      'LINE  HITS  RULE',
      '   2     2  block out proto tcp from any to 10.0.2.2 port 22',
      '   3     1  pass all',
      'start.conf: 2 rules, 3 checks: 2 blocked, 0 matched no rule (passed)',
    ]);
  });

  test('no rules: says everything passes', async () => {
    backend.set.replace('# nothing yet\n');
    backend.open(WEB);
    expect((await ctl(['filter'])).out).toBe('no filter rules: everything passes (1 check: 0 blocked, 1 matched no rule (passed))\n');
  });

  test('--json prints the API object', async () => {
    const r = await ctl(['filter', '--json']);
    expect(JSON.parse(r.out)).toEqual(backend.set.toJSON());
  });

  test('set FILE replaces the rules; the file name travels with them', async () => {
    const f = path.join(dir, 'new.conf');
    fs.writeFileSync(f, 'block local\nblock out proto udp to any port 53\n');
    const r = await ctl(['filter', 'set', f]);
    expect(r).toEqual({ code: 0, out: `filter: 2 rules from ${f} in force\n`, err: '' });
    expect(backend.set.toJSON()).toMatchObject({ source: f, version: 1 });
    expect(backend.open(SSH)).toBe('block'); // to the gateway: local
    expect(backend.open(WEB)).toBe('pass');
  });

  test('set - reads stdin', async () => {
    const r = await ctl(['filter', 'set', '-'], 'block all\n');
    expect(r).toEqual({ code: 0, out: 'filter: 1 rule from <stdin> in force\n', err: '' });
    expect(backend.open(WEB)).toBe('block');
  });

  test('a bad file: one line naming file:line:token, exit 2, no request, old rules stay', async () => {
    const f = path.join(dir, 'bad.conf');
    fs.writeFileSync(f, 'pass all\nblock out proto tcpp all\n');
    const r = await ctl(['filter', 'set', f]);
    expect(r).toEqual({ code: 2, out: '', err: `vmnat: ${f}:2: unknown protocol "tcpp" (tcp, udp or icmp)\n` });
    expect(api.stats.requests).toBe(0);
    expect(backend.set.version).toBe(0);
  });

  test('an unreadable file, a missing FILE, an unknown subcommand: exit 2', async () => {
    const missing = path.join(dir, 'missing.conf');
    expect(await ctl(['filter', 'set', missing])).toEqual({ code: 2, out: '', err: `vmnat: filter set: cannot read ${missing}: ENOENT\n` });
    expect(await ctl(['filter', 'set'])).toEqual({ code: 2, out: '', err: 'vmnat: filter set: needs a FILE (or - for stdin) (see vmnat ctl --help)\n' });
    expect((await ctl(['filter', 'clear'])).err).toBe('vmnat: filter: unknown subcommand "clear" (set, or none to show the rules) (see vmnat ctl --help)\n');
    expect(api.stats.requests).toBe(0);
  });

  test('vmnat ctl --help lists both commands', async () => {
    const r = await ctl(['--help']);
    expect(r.out).toMatch(/^  filter +filter rules with their hit counts$/m);
    expect(r.out).toMatch(/^  filter set FILE\|- +replace the filter rules/m);
  });

  test('a vmnat without filter support: exit 1 with the reason', async () => {
    await api.close();
    api = await ApiServer.listen({ path: sock, backend: new FakeBackend(fwd) });
    expect(await ctl(['filter'])).toEqual({ code: 1, out: '', err: 'vmnat: filter: this vmnat has no filter rules to show or replace\n' });
  });
});
