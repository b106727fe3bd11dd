/**
 * A lab's guest: the project's test VM (Debian kernel + busybox initramfs, scripts/build-guest.sh)
 * in qemu under TCG, driven through its serial console like a person at a terminal.
 *
 * Theory of operation: the tests hand the guest a one-shot /test.sh and read its results after
 * it powers off; a lab must interleave guest and host steps instead (the host looks at vmnat's
 * flow table while the guest's download is in flight, then adds a forward to a service the guest
 * already runs). So the lab appends a second cpio archive whose /test.sh is a tiny command loop
 * on the console: it turns echo off, prints a ready mark, then reads one line at a time, evals it
 * with stdin from /dev/null (so a command cannot swallow the next lines) and stderr merged, and
 * prints `VMNAT-LAB status=N` after it. The console is qemu's `-serial stdio` on pipes, so
 * nothing is lost between boot and our first read, and qemu only feeds the UART as fast as the
 * guest drains it. Commands run strictly one at a time (`sh()` queues); a command that
 * outlives its timeout fails the lab (the loop cannot be interrupted from here).
 *
 * Lifetime: qemu is our child; `stop()` asks the guest to power off (qemu runs with -no-reboot,
 * so it exits) and SIGKILLs that PID after a grace period. Nothing is killed by name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { QEMU, cpioArchive, ensureGuest } from '../../test/helpers/vm.ts';

const STATUS_MARK = 'VMNAT-LAB status=';
const READY_MARK = 'VMNAT-LAB ready';

/** The command loop run as /test.sh by the guest's /init (busybox ash). */
function consoleLoop(hostname: string): string {
  return `
stty -echo 2>/dev/null
hostname ${hostname}
echo "${READY_MARK}"
while IFS= read -r line; do
  eval "$line" </dev/null 2>&1
  echo "${STATUS_MARK}$?"
done
`;
}

export interface GuestOptions {
  /** qemu's -netdev value (must define id=n0). */
  netdev: string;
  mac: string;
  /** The guest's host name (default vmnat-lab); also names its initrd file in `dir`. */
  hostname?: string;
  /** A private directory for the initrd (removed by the lab's cleanup, not here). */
  dir: string;
  /** More files for the guest, by path relative to / (mode 0755 for names ending .sh). */
  files?: Readonly<Record<string, string>>;
  /** More newc cpio archives (paths) unpacked after the base image and before `files`. */
  archives?: readonly string[];
  /** More network cards (eth1, eth2, …), each with its own qemu -netdev (whose id is set here). */
  moreNics?: readonly { netdev: string; mac: string }[];
  bootTimeoutMs?: number;
}

export interface GuestResult {
  output: string;
  status: number;
}

export class Guest {
  /** qemu's argv (without the binary), to show the reader. */
  readonly argv: readonly string[];
  readonly child: ChildProcess;
  /** Milliseconds from spawn to the console's ready mark. */
  bootMs = 0;
  private buffer = '';
  private waiter: (() => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private exited = false;
  private readonly exit: Promise<void>;

  private constructor(argv: readonly string[], child: ChildProcess, readonly hostname: string) {
    this.argv = argv;
    this.child = child;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      // The tty turns \n into \r\n; nothing the lab shows needs the \r.
      this.buffer += chunk.replace(/\r/g, '');
      this.waiter?.();
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.buffer += chunk;
    });
    this.exit = new Promise((resolve) => {
      child.once('close', () => {
        this.exited = true;
        this.waiter?.();
        resolve();
      });
      child.once('error', () => {
        this.exited = true;
        this.waiter?.();
        resolve();
      });
    });
  }

  /** Boots the guest and resolves once its console loop is ready for commands. */
  static async boot(o: GuestOptions): Promise<Guest> {
    const { vmlinux, initramfs } = ensureGuest();
    const hostname = o.hostname ?? 'vmnat-lab';
    const initrd = path.join(o.dir, `initrd-${hostname}.cpio`);
    const base = readFileSync(initramfs);
    const extra = cpioArchive({ ...o.files, 'test.sh': consoleLoop(hostname) });
    // The kernel unpacks concatenated archives in order (later files win); each starts 4-aligned.
    const parts: Buffer[] = [];
    for (const a of [base, ...(o.archives ?? []).map((p) => readFileSync(p)), extra]) parts.push(a, Buffer.alloc((4 - (a.length % 4)) % 4));
    writeFileSync(initrd, Buffer.concat(parts));
    const argv = [
      '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-m', '256', '-smp', '1',
      '-kernel', vmlinux, '-initrd', initrd,
      '-append', 'console=ttyS0 quiet panic=-1',
      '-serial', 'stdio',
      '-netdev', o.netdev,
      '-device', `virtio-net-pci,netdev=n0,romfile=,mac=${o.mac}`,
      ...(o.moreNics ?? []).flatMap((n, i) => ['-netdev', `${n.netdev},id=n${i + 1}`, '-device', `virtio-net-pci,netdev=n${i + 1},romfile=,mac=${n.mac}`]),
    ];
    const started = performance.now();
    const child = spawn(QEMU, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const guest = new Guest(argv, child, hostname);
    try {
      await guest.until((text) => text.includes(READY_MARK), o.bootTimeoutMs ?? 90_000, 'the guest console to be ready');
    } catch (e) {
      await guest.stop(0);
      throw e;
    }
    guest.buffer = guest.buffer.slice(guest.buffer.indexOf(READY_MARK) + READY_MARK.length + 1);
    guest.bootMs = Math.round(performance.now() - started);
    return guest;
  }

  /** Waits until `test(buffer)` holds; rejects on timeout or if qemu exits. */
  private until(test: (text: string) => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; console so far:\n${this.buffer}`));
      }, timeoutMs);
      const check = (): void => {
        if (test(this.buffer)) {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        } else if (this.exited) {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(new Error(`qemu exited while waiting for ${what}; console:\n${this.buffer}`));
        }
      };
      this.waiter = check;
      check();
    });
  }

  /**
   * Runs one shell line in the guest and resolves with its output (stdout and stderr) and exit
   * status. Lines must not contain a newline; commands run in order, one at a time.
   */
  sh(line: string, timeoutMs = 30_000): Promise<GuestResult> {
    if (line.includes('\n')) throw new Error('guest commands are single lines');
    const run = async (): Promise<GuestResult> => {
      this.child.stdin?.write(`${line}\n`);
      await this.until((text) => new RegExp(`${STATUS_MARK}\\d+\\n`).test(text), timeoutMs, `the guest command: ${line}`);
      const m = new RegExp(`${STATUS_MARK}(\\d+)\\n`).exec(this.buffer)!;
      const output = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      return { output, status: Number(m[1]) };
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Powers the guest off (qemu exits with -no-reboot); SIGKILLs qemu's PID after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.exited) return;
    if (graceMs > 0) this.child.stdin?.write('sync; poweroff -f\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exit;
    clearTimeout(timer);
    // Our end of the console pipe would keep the lab's process alive after qemu is gone.
    this.child.stdin?.destroy();
  }
}
