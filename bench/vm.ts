/**
 * A real VM's download and upload through each vmnat transport, beside qemu's own libslirp and
 * passt: a script, not a test.
 *
 *   node --import tsx bench/vm.ts [--rounds 3] [--mb 48] [--engines vmnat-socket,vmnat-stream,vmnat-fd,libslirp,passt]
 *        [--vmnat-args "FLAGS"] [--out results.json] [--timeout S] [--guest-watch S] [--qmp]
 *
 * Theory of operation: the guest is the test VM (scripts/build-guest.sh: Debian's kernel and a
 * busybox initramfs) in qemu under TCG with one virtio-net NIC, booted by test/helpers/vm.ts. "The
 * host" is an HTTP server on 127.0.0.1 in this process, reached from the guest through the gateway
 * 10.0.2.2, which every engine maps to host loopback. The guest leases, then `wget`s MB megabytes
 * (GET /down) to /dev/null and sends MB megabytes back with `nc` to a TCP sink (a file made in
 * the guest's RAM before the clock starts; busybox 1.35's `wget --post-file` sends an empty body). Each transfer is timed twice: in the guest (/proc/uptime around wget:
 * the issue's method, but a TCG guest's clock can drift) and on the host (the server's first to
 * last byte: the figure the table uses). Rounds are the outer loop and the engine order rotates
 * every round, so drift in the machine's load does not favour one engine.
 *
 * Engines:
 *   vmnat-socket  vmnat --socket S, qemu -netdev dgram (one frame per datagram, as vfkit/krunkit)
 *   vmnat-stream  vmnat --stream S, qemu -netdev stream (4-byte length framing)
 *   vmnat-fd      vmnat --fd 3 and qemu -netdev dgram,local.type=fd on the two ends of a socketpair
 *   libslirp      qemu -netdev user (libslirp inside qemu's own process)
 *   passt         passt -s S, qemu -netdev stream
 * vmnat's CPU (utime+stime of its process over the whole VM run, boot included) is reported as
 * CPU seconds and µs per MTU frame moved; libslirp's CPU is inside qemu and cannot be told apart.
 * vmnat gets `--dns-server 127.0.0.1` (the guest makes no DNS queries; nothing leaves loopback).
 */
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { addNetns, cleanup, cpuSeconds, delNetns, installCleanupHandlers, median, must, registerPath, startBg, type Bg } from './lib/sys.ts';
import { closeFd, runVm, socketpairDgram, startVmnat, type VmnatProcess, type VmRun } from '../test/helpers/vm.ts';

const ENGINES = ['vmnat-socket', 'vmnat-stream', 'vmnat-fd', 'libslirp', 'passt'] as const;
type EngineName = (typeof ENGINES)[number];

const argv = process.argv.slice(2);
function opt(name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}
function usage(msg: string): never {
  process.stderr.write(`bench/vm.ts: ${msg}\n`);
  process.exit(2);
}
const rounds = Number(opt('rounds') ?? 3);
const mb = Number(opt("mb") ?? 48);
if (!Number.isInteger(rounds) || rounds < 1) usage(`--rounds: '${opt('rounds')}' is not a positive integer`);
if (!Number.isInteger(mb) || mb < 1 || mb > 150) usage(`--mb: '${opt('mb')}' must be an integer in 1..150 (the guest has 256 MB of RAM)`);
const engines = (opt('engines') ?? ENGINES.join(',')).split(',').map((s) => s.trim()) as EngineName[];
for (const e of engines) if (!ENGINES.includes(e)) usage(`--engines: unknown '${e}' (one of ${ENGINES.join(',')})`);
const vmnatArgs = (opt('vmnat-args') ?? '').split(' ').filter(Boolean);
const outFile = opt('out');
/**
 * --qemu-qlen N: run qemu in a namespace of its own whose net.unix.max_dgram_qlen is N. qemu's
 * dgram netdev sends with sendto() from a socket it never connects, so the kernel lets any peer
 * queue at most that many datagrams to it (default 10) — what this shows is that limit's cost.
 * The unix sockets are files, reachable across namespaces; only qemu's own socket's limit changes.
 * Only the vmnat-socket runs use it (the others are not affected by the limit; libslirp inside a
 * namespace would not reach the host's loopback).
 */
const qemuQlen = opt('qemu-qlen') === undefined ? undefined : Number(opt('qemu-qlen'));
if (qemuQlen !== undefined && (!Number.isInteger(qemuQlen) || qemuQlen < 1)) usage(`--qemu-qlen: '${opt('qemu-qlen')}' is not a positive integer`);
const qemuNs = qemuQlen === undefined ? undefined : `vmnat-bvm${process.pid}-q`;
/** --timeout S: how long one VM run may take (default 240 s). */
const runTimeoutS = Number(opt('timeout') ?? 240);
if (!Number.isFinite(runTimeoutS) || runTimeoutS < 10) usage(`--timeout: '${opt('timeout')}' must be a number of seconds ≥ 10`);
/**
 * --guest-watch S: S seconds into the upload the guest prints its view of the network to the
 * console (TCP sockets with their queues and timers, the NIC's counters, virtio interrupts),
 * printed here when a run fails: what a stalled upload looked like from inside.
 */
const guestWatchS = opt('guest-watch') === undefined ? undefined : Number(opt('guest-watch'));
/** --qmp: each VM gets a QMP socket beside its netdev socket (RUN.qmp), for looking inside qemu during a run. */
const withQmp = argv.includes('--qmp');

function progress(msg: string): void {
  process.stderr.write(`bench-vm: ${msg}\n`);
}

// ---- the host's server ------------------------------------------------------------------------

interface Timing {
  bytes: number;
  ms: number;
}

interface HostServer {
  port: number;
  /** A TCP sink for the upload (busybox 1.35's `wget --post-file` sends an empty body). */
  sinkPort: number;
  lastDown?: Timing;
  lastUp?: Timing;
  close(): Promise<void>;
}

function startServer(payload: Buffer): Promise<HostServer> {
  const state: HostServer = { port: 0, sinkPort: 0, close: () => Promise.resolve() };
  const server = http.createServer((req, res) => {
    const t0 = performance.now();
    if (req.method === 'GET' && req.url === '/down') {
      res.writeHead(200, { 'content-length': payload.length, 'content-type': 'application/octet-stream' });
      // 'close' of the socket is too late (keep-alive); the response's 'finish' fires once the
      // last byte went to the kernel, which with ~4 MB of socket buffers is within a few ms of
      // the guest having it at these rates.
      res.on('finish', () => (state.lastDown = { bytes: payload.length, ms: performance.now() - t0 }));
      res.end(payload);
      return;
    }
    res.writeHead(404).end();
  });
  const sink = net.createServer((sock) => {
    let n = 0;
    let first = 0;
    sock.on('data', (d: Buffer) => {
      if (n === 0) first = performance.now();
      n += d.length;
    });
    sock.on('end', () => {
      state.lastUp = { bytes: n, ms: performance.now() - first };
      sock.end();
    });
    sock.on('error', () => sock.destroy());
  });
  const listen = (srv: net.Server): Promise<number> =>
    new Promise((resolve) => {
      srv.listen(0, '127.0.0.1', () => {
        const a = srv.address();
        resolve(typeof a === 'object' && a ? a.port : 0);
      });
    });
  return Promise.all([listen(server), listen(sink)]).then(([p, sp]) => {
    state.port = p;
    state.sinkPort = sp;
    state.close = async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => sink.close(() => r()));
    };
    return state;
  });
}

// ---- one VM run ------------------------------------------------------------------------------

function guestScript(port: number, sinkPort: number): string {
  return `
vmnat_lease || { vmnat_result done=fail; exit 1; }
dd if=/dev/zero of=/tmp/up.bin bs=1048576 count=${mb} 2>/dev/null
t0=$(vmnat_uptime)
if wget -q -O /dev/null http://10.0.2.2:${port}/down; then
  t1=$(vmnat_uptime); vmnat_result down=ok down_guest_s=$(echo "$t1 $t0" | awk '{print $1-$2}')
else vmnat_result down=fail; fi
t0=$(vmnat_uptime)
${guestWatchS === undefined ? '' : `( sleep ${guestWatchS}; echo GUEST-WATCH tcp; cat /proc/net/tcp; echo GUEST-WATCH dev; cat /proc/net/dev; echo GUEST-WATCH snmp; grep -E '^Tcp' /proc/net/snmp; echo GUEST-WATCH irq; grep -i virt /proc/interrupts; echo GUEST-WATCH end ) &`}
if nc 10.0.2.2 ${sinkPort} </tmp/up.bin >/dev/null; then
  t1=$(vmnat_uptime); vmnat_result up=ok up_guest_s=$(echo "$t1 $t0" | awk '{print $1-$2}')
else vmnat_result up=fail; fi
`;
}

interface Result {
  engine: EngineName;
  round: number;
  ok: boolean;
  error?: string;
  down_mbs?: number;
  up_mbs?: number;
  down_guest_mbs?: number;
  up_guest_mbs?: number;
  engine_cpu_s?: number;
  engine_us_per_frame?: number;
  vm_wall_ms?: number;
}


async function oneRun(engine: EngineName, round: number, server: HostServer, dir: string): Promise<Result> {
  const sock = path.join(dir, `${engine}-${round}.sock`);
  const qsock = path.join(dir, `${engine}-${round}-q.sock`);
  let bg: Bg | undefined;
  let vmnat: VmnatProcess | undefined;
  let netdev = '';
  let extraFds: Record<number, number> | undefined;
  let fds: [number, number] | undefined;
  let failed = false;
  // The API socket: on a failed run its flow listing (states, bytes) is printed with the counters.
  const api = path.join(dir, `${engine}-${round}.api`);
  const base = ['--dns-server', '127.0.0.1', '--api-socket', api, ...vmnatArgs];
  server.lastDown = undefined;
  server.lastUp = undefined;
  try {
    switch (engine) {
      case 'vmnat-socket':
        vmnat = await startVmnat([...base, '--socket', sock]);
        netdev = `dgram,id=n0,local.type=unix,local.path=${qsock},remote.type=unix,remote.path=${sock}`;
        break;
      case 'vmnat-stream':
        vmnat = await startVmnat([...base, '--stream', sock]);
        netdev = `stream,id=n0,server=off,addr.type=unix,addr.path=${sock}`;
        break;
      case 'vmnat-fd': {
        fds = socketpairDgram();
        vmnat = await startVmnat([...base, '--fd', '3'], { extraFds: { 3: fds[0] } });
        extraFds = { 4: fds[1] };
        netdev = 'dgram,id=n0,local.type=fd,local.str=4';
        break;
      }
      case 'libslirp':
        netdev = 'user,id=n0';
        break;
      case 'passt':
        bg = startBg(['passt', '-f', '-q', '-s', sock, '-a', '10.0.2.15', '-n', '24', '-g', '10.0.2.2', '--runas', '0', '-t', 'none', '-u', 'none']);
        for (let i = 0; i < 100 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
        if (!fs.existsSync(sock)) throw new Error(`passt made no socket: ${bg.stderr()}`);
        netdev = `stream,id=n0,server=off,addr.type=unix,addr.path=${sock}`;
        break;
    }
    const pid = vmnat?.child.pid;
    const cpu0 = pid !== undefined ? cpuSeconds(pid) : NaN;
    const vm: VmRun = await runVm({
      netdev,
      script: guestScript(server.port, server.sinkPort),
      timeoutMs: runTimeoutS * 1000,
      ...(withQmp ? { qemuArgs: ['-qmp', `unix:${path.join(dir, `${engine}-${round}.qmp`)},server=on,wait=off`] } : {}),
      ...(extraFds ? { extraFds } : {}),
      ...(qemuNs && engine === 'vmnat-socket' ? { launcher: { command: 'ip', args: ['netns', 'exec', qemuNs] } } : {}),
    });
    const cpu = pid !== undefined ? cpuSeconds(pid) - cpu0 : NaN;
    const r = vm.results;
    const res: Result = { engine, round, ok: r['down'] === 'ok' && r['up'] === 'ok', vm_wall_ms: vm.durationMs };
    if (!res.ok) {
      const watch = vm.log.indexOf('GUEST-WATCH');
      res.error = `results ${JSON.stringify(r)}; console tail: ${watch >= 0 ? vm.log.slice(watch) : vm.log.slice(-1500)}`;
      failed = true;
    }
    const MB = mb * 1048576 / 1e6;
    // (Set by the server's handlers while the VM ran; TypeScript cannot see that.)
    const down = server.lastDown as Timing | undefined;
    const up = server.lastUp as Timing | undefined;
    if (process.env['BENCH_VM_DEBUG']) progress(`server timings: ${JSON.stringify({ down, up })}`);
    if (down) res.down_mbs = down.bytes / 1e3 / down.ms;
    if (up) res.up_mbs = up.bytes / 1e3 / up.ms;
    if (r['down_guest_s']) res.down_guest_mbs = MB / Number(r['down_guest_s']);
    if (r['up_guest_s']) res.up_guest_mbs = MB / Number(r['up_guest_s']);
    if (Number.isFinite(cpu)) {
      res.engine_cpu_s = cpu;
      // Data frames both ways (1,448-byte payloads); ACKs and boot traffic are in the CPU, not the count.
      res.engine_us_per_frame = (cpu * 1e6) / ((2 * mb * 1048576) / 1448);
    }
    return res;
  } catch (err) {
    return { engine, round, ok: false, error: (err as Error).message };
  } finally {
    if (fds) {
      closeFd(fds[0]);
      closeFd(fds[1]);
    }
    await bg?.stop('SIGTERM', 3000);
    if (vmnat && (failed || process.env['BENCH_VM_DEBUG'])) {
      // vmnat's counters (SIGUSR1 prints them on stderr) for a look at what the run did.
      vmnat.child.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, 300));
      const m = /stats: (\{.*\})/.exec(vmnat.stderr());
      if (m) progress(`vmnat stats: ${m[1]}`);
      try {
        progress(`vmnat flows: ${execFileSync('curl', ['-sS', '--max-time', '3', '--unix-socket', api, 'http://vmnat/flows']).toString()}`);
      } catch (err) {
        progress(`vmnat flows: ${(err as Error).message}`);
      }
    }
    await vmnat?.stop('SIGTERM', 3000);
  }
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<void> {
  installCleanupHandlers();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-bvm${process.pid}-`));
  registerPath(dir);
  if (qemuNs) {
    await addNetns(qemuNs);
    await must(['ip', 'netns', 'exec', qemuNs, 'sysctl', '-qw', `net.unix.max_dgram_qlen=${qemuQlen}`]);
    await must(['ip', '-n', qemuNs, 'link', 'set', 'lo', 'up']);
  }
  const payload = Buffer.alloc(mb * 1048576, 0x5a);
  const server = await startServer(payload);
  progress(`load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; ${rounds} round(s) × ${engines.join(', ')}; ${mb} MB each way`);
  const results: Result[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = engines.map((_, i) => engines[(i + round - 1) % engines.length]!);
    for (const e of order) {
      const r = await oneRun(e, round, server, dir);
      results.push(r);
      progress(`round ${round} ${e}: ${r.ok ? '' : `FAIL ${r.error} `}down ${r.down_mbs?.toFixed(1)} MB/s (guest ${r.down_guest_mbs?.toFixed(1)}), up ${r.up_mbs?.toFixed(1)} MB/s (guest ${r.up_guest_mbs?.toFixed(1)})${r.engine_cpu_s !== undefined ? `, vmnat CPU ${r.engine_cpu_s.toFixed(2)} s (${r.engine_us_per_frame?.toFixed(2)} µs/frame)` : ''}`);
    }
  }
  await server.close();
  if (qemuNs) await delNetns(qemuNs);
  const med = (e: EngineName, k: keyof Result): number | undefined => {
    const xs = results.filter((r) => r.engine === e && r.ok).map((r) => r[k]).filter((v): v is number => typeof v === 'number');
    return xs.length ? median(xs) : undefined;
  };
  const best = (k: keyof Result): number | undefined => {
    const xs = (['libslirp', 'passt'] as const).filter((e) => engines.includes(e)).map((e) => med(e, k)).filter((v): v is number => v !== undefined);
    return xs.length ? Math.max(...xs) : undefined;
  };
  const f = (x: number | undefined, d = 1): string => (x === undefined ? '—' : x.toFixed(d));
  const lines = [
    `bench/vm.ts ${new Date().toISOString()}: ${rounds} round(s), ${mb} MB each way${qemuNs ? `, qemu's net.unix.max_dgram_qlen ${qemuQlen}` : ''}, medians (host-side timing; guest-timed in parentheses); load now ${os.loadavg()[0]!.toFixed(2)}`,
    '',
    '| engine | download MB/s | upload MB/s | ÷ best of libslirp/passt (down / up) | vmnat CPU s per run | µs per data frame |',
    '|---|---|---|---|---|---|',
  ];
  const bd = best('down_mbs');
  const bu = best('up_mbs');
  for (const e of engines) {
    const d = med(e, 'down_mbs');
    const u = med(e, 'up_mbs');
    const ok = results.filter((r) => r.engine === e && r.ok).length;
    lines.push(`| ${e}${ok < rounds ? ` (${ok}/${rounds} ok)` : ''} | ${f(d)} (${f(med(e, 'down_guest_mbs'))}) | ${f(u)} (${f(med(e, 'up_guest_mbs'))}) | ${d && bd ? (d / bd).toFixed(2) : '—'} / ${u && bu ? (u / bu).toFixed(2) : '—'} | ${f(med(e, 'engine_cpu_s'), 2)} | ${f(med(e, 'engine_us_per_frame'), 2)} |`);
  }
  process.stdout.write(lines.join('\n') + '\n');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify({ rounds, mb, engines, vmnatArgs, results }, null, 2) + '\n');
}

main()
  .then(() => {
    cleanup();
    process.exit(0);
  })
  .catch((err: unknown) => {
    process.stderr.write(`bench-vm: ${(err as Error).stack ?? String(err)}\n`);
    cleanup();
    process.exit(1);
  });
