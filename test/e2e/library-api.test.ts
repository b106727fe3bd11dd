/**
 * The Node.js library API (`import { startVmnat, ApiClient } from 'vmnat'`), with the kernel of a
 * network namespace as the guest: start vmnat through the handle, wait for the guest's lease as an
 * event, add a forward through the handle, fetch a file from the guest's web server through it
 * (sha256), read leases and forwards, follow events, close, and find no process, socket or
 * directory left behind. Then the package as a consumer sees it: `import 'vmnat'` resolved by
 * Node through package.json `exports` (dist/), typed for a strict TypeScript consumer, and what
 * `npm pack` would ship.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, ApiError, VmnatStartError, startVmnat, type VmnatEvent, type VmnatHandle } from '../../src/index.ts';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { ROOT, killAll, run } from '../helpers/proc.ts';
import { startTestDns, type TestDns } from '../helpers/dnsserver.ts';

let ns: Netns;
let dns: TestDns;
let httpd: ChildProcess | undefined;
const page = randomBytes(300_000);

beforeAll(async () => {
  ns = await createNetns();
  dns = await startTestDns({});
  mkdirSync(path.join(ns.dir, 'www'));
  writeFileSync(path.join(ns.dir, 'www/page.bin'), page);
}, 60_000);

afterAll(async () => {
  httpd?.kill('SIGKILL');
  await dns?.close();
  await ns?.destroy();
  killAll();
});

describe.sequential('startVmnat() with a netns guest', () => {
  let vm: VmnatHandle | undefined;
  afterAll(async () => {
    await vm?.close();
  });

  it('starts, sees the lease as an event, forwards a port added through the handle, and closes clean', async () => {
    vm = await startVmnat({ tap: { name: 'tap0', netns: ns.path }, dnsServers: [`127.0.0.1:${dns.port}`] });
    const h = vm;
    expect(h.ready).toMatchObject({ link: 'tap', network: '10.0.2.0/24', gateway: '10.0.2.2', guest_ip: '10.0.2.15' });
    expect(existsSync(h.ready.api_socket)).toBe(true);
    const privateDir = path.dirname(h.ready.api_socket);

    // Every event from here on, in order, until the stream is aborted.
    const seen: VmnatEvent[] = [];
    const stop = new AbortController();
    const following = (async () => {
      for await (const e of h.events({ signal: stop.signal })) seen.push(e);
    })();

    const leased = h.waitForLease({ timeoutMs: 30_000 });
    const lease = await leaseWithUdhcpc(ns);
    const event = await leased;
    expect(event).toMatchObject({ type: 'lease', event: 'bound', ip: lease['ip'] });
    expect(lease['ip']).toBe('10.0.2.15');
    expect(await h.leases()).toEqual([expect.objectContaining({ ip: '10.0.2.15', mac: event.mac, state: 'bound' })]);

    httpd = spawn('ip', ['netns', 'exec', ns.name, 'busybox', 'httpd', '-f', '-p', '8080', '-h', path.join(ns.dir, 'www')], { stdio: 'ignore' });
    const fwd = await h.addForward('tcp::0-:8080', 'web');
    expect(fwd).toMatchObject({ name: 'web', proto: 'tcp', host_addr: '127.0.0.1', guest_port: 8080 });
    expect(fwd.host_port).toBeGreaterThan(0);
    // A port already taken is refused by the API (409), typed.
    await expect(h.addForward(`tcp::${fwd.host_port}-:8081`)).rejects.toMatchObject({ name: 'ApiError', status: 409 });

    let body: Buffer | undefined;
    for (let i = 0; i < 50 && body === undefined; i++) {
      try {
        const res = await fetch(`http://127.0.0.1:${fwd.host_port}/page.bin`, { signal: AbortSignal.timeout(5_000) });
        if (res.ok) body = Buffer.from(await res.arrayBuffer());
      } catch {
        await new Promise((r) => setTimeout(r, 100)); // httpd not listening yet: the guest resets
      }
    }
    expect(body && createHash('sha256').update(body).digest('hex')).toBe(createHash('sha256').update(page).digest('hex'));
    const listed = await h.forwards();
    expect(listed.find((f) => f.name === 'web')?.tcp_accepted).toBeGreaterThanOrEqual(1);

    // The same API through a client of its own, as another tool would use it.
    const client = new ApiClient(h.ready.api_socket);
    expect(await client.health()).toMatchObject({ status: 'ok' });
    await h.removeForward('web');
    await expect(client.removeForward('web')).rejects.toBeInstanceOf(ApiError);

    stop.abort();
    await following;
    expect(seen.some((e) => e.type === 'lease' && e.event === 'bound' && e.ip === '10.0.2.15')).toBe(true);
    expect(seen.filter((e) => e.type === 'forward').map((e) => e.type === 'forward' && `${e.event} ${e.rule.name}`)).toEqual(['added web', 'removed web']);
    expect(seen.some((e) => e.type === 'flow' && e.event === 'open' && e.flow.forward === 'web')).toBe(true);
    expect(seen.every((e) => typeof e.time === 'string')).toBe(true);

    const pid = h.pid;
    expect(await h.close()).toEqual({ code: 0, signal: null });
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    expect(existsSync(h.ready.api_socket)).toBe(false);
    expect(existsSync(privateDir)).toBe(false);
    // A second close is the same close.
    expect(await h.close()).toEqual({ code: 0, signal: null });
    vm = undefined;
  }, 90_000);

  it('a bad option rejects with VmnatStartError: exit status 2 and the line naming the flag; nothing left', async () => {
    // startVmnat's private directories are mkdtemp('vmnat-'): six random characters after the dash.
    const privateDirs = (): string[] => readdirSync(os.tmpdir()).filter((f) => /^vmnat-[A-Za-z0-9]{6}$/.test(f));
    const before = privateDirs();
    const err = await startVmnat({ mtu: 12 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmnatStartError);
    expect(err).toMatchObject({ reason: 'exited', exitCode: 2 });
    expect((err as Error).message).toMatch(/^vmnat: --mtu: /);
    expect(privateDirs()).toEqual(before);
  }, 30_000);
});

describe('the package as an installing user gets it', () => {
  let consumer: string;
  beforeAll(() => {
    // A project that depends on vmnat: node_modules/vmnat is this checkout, as `npm link` makes it.
    consumer = mkdtempSync(path.join(os.tmpdir(), `vmnat-consumer-${process.pid}-`));
    mkdirSync(path.join(consumer, 'node_modules'));
    symlinkSync(ROOT, path.join(consumer, 'node_modules/vmnat'));
    writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', type: 'module', private: true }));
  });
  afterAll(() => rmSync(consumer, { recursive: true, force: true }));

  it("`import { startVmnat } from 'vmnat'` loads dist/ through package.json exports and runs", async () => {
    writeFileSync(
      path.join(consumer, 'main.mjs'),
      [
        "import { startVmnat } from 'vmnat';",
        "const url = import.meta.resolve('vmnat');",
        "const vm = await startVmnat({ dnsServers: ['127.0.0.1:9'] });",
        'const f = await vm.addForward("udp::0-:53");',
        'const closed = await vm.close();',
        'console.log(JSON.stringify({ url, link: vm.ready.link, proto: f.proto, closed }));',
      ].join('\n'),
    );
    const r = await run([process.execPath, path.join(consumer, 'main.mjs')], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { url: string; link: string; proto: string; closed: unknown };
    expect(out.url).toMatch(/\/dist\/index\.js$/);
    expect(out).toMatchObject({ link: 'socket', proto: 'udp', closed: { code: 0, signal: null } });
  }, 60_000);

  it('its declarations type-check in a strict consumer (skipLibCheck off)', async () => {
    writeFileSync(
      path.join(consumer, 'check.ts'),
      [
        "import { startVmnat, ApiClient, type VmnatHandle, type ApiLease, type VmnatEvent } from 'vmnat';",
        "const vm: VmnatHandle = await startVmnat({ hostfwd: ['tcp::0-:22'], logLevel: 'warn' });",
        'const leases: ApiLease[] = await vm.leases();',
        'for await (const e of vm.events()) { const ev: VmnatEvent = e; if (ev.type === "lease") console.log(ev.ip, ev.mac, leases.length); }',
        'const flows = await new ApiClient(vm.ready.api_socket).flows();',
        'console.log(flows[0]?.bytes_to_guest);',
        '// @ts-expect-error not an option',
        'await startVmnat({ nonsense: true });',
        '',
      ].join('\n'),
    );
    writeFileSync(
      path.join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false,
          types: ['node'], typeRoots: [path.join(ROOT, 'node_modules/@types')],
        },
        files: ['check.ts'],
      }),
    );
    const r = await run([process.execPath, path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(consumer, 'tsconfig.json')], { timeoutMs: 60_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  }, 60_000);

  it('npm pack ships the launcher, dist/ with declarations, the sources and the addon sources, and no tests', async () => {
    const r = await run(['npm', 'pack', ROOT, '--dry-run', '--json', '--ignore-scripts'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const files = (JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    for (const f of ['package.json', 'README.md', 'bin/vmnat.mjs', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/build.json', 'src/cli.ts', 'native/binding.gyp', 'native/src/addon.cc']) {
      expect(files, f).toContain(f);
    }
    expect(files.filter((f) => /^(test|bench|labs|node_modules|\.cache)\//.test(f) || f.startsWith('native/build/'))).toEqual([]);
  }, 60_000);
});
