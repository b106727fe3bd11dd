/**
 * How a lab talks to its reader: numbered steps with the reason for each, every command with its
 * output (`host$` for the host, `guest#` for the VM's root shell), and a check after each claim.
 *
 * Theory of operation: a lab is a sequence of claims ("the guest has 10.0.2.15"), each proven by
 * what a command printed. `check()` prints ✓ or ✗ with the claim; a ✗ throws `LabCheckFailed`, the
 * lab's runner cleans up and exits 1. Output goes to one writable (stdout), synchronously, so the
 * transcript reads in the order things happened. Every line a command printed is shown (what the
 * reader should look at is in it), so labs pick commands whose output is short.
 */

/** A claim of the lab did not hold. */
export class LabCheckFailed extends Error {
  override readonly name = 'LabCheckFailed';
}

export interface Writer {
  write(s: string): unknown;
}

export class Transcript {
  private stepNo = 0;
  private readonly started = performance.now();
  /** Every check made: the e2e test and the summary count them. */
  readonly checks: { claim: string; ok: boolean }[] = [];

  constructor(private readonly out: Writer) {}

  private line(s = ''): void {
    this.out.write(`${s}\n`);
  }

  /** The lab's title and what it teaches. */
  title(name: string, about: string): void {
    this.line(`━━━ lab ${name} ━━━`);
    for (const l of about.trim().split('\n')) this.line(l.trim());
  }

  /** A new step: a heading and why the step matters. */
  step(title: string, why: string): void {
    this.stepNo++;
    this.line();
    this.line(`── step ${this.stepNo}: ${title}`);
    for (const l of why.trim().split('\n')) this.line(`   ${l.trim()}`);
  }

  /** A command and what it printed. `who` is the prompt: `host$`, or `guest#` (`vm1#` with several guests). */
  command(who: 'host$' | `${string}#`, cmd: string, output: string): void {
    this.line(`${who} ${cmd}`);
    const text = output.replace(/^\n+/, '').replace(/\s+$/, '');
    if (text !== '') for (const l of text.split('\n')) this.line(`    ${l}`);
  }

  /** Free text: an explanation of what was just shown. */
  note(text: string): void {
    for (const l of text.trim().split('\n')) this.line(`   ${l.trim()}`);
  }

  /** Raw lines (a diagram), as they are. */
  raw(text: string): void {
    for (const l of text.replace(/\s+$/, '').split('\n')) this.line(l);
  }

  /** Records a claim; a false one fails the lab (after printing why). */
  check(ok: boolean, claim: string, detail?: string): void {
    this.checks.push({ claim, ok });
    this.line(`   ${ok ? '✓' : '✗'} ${claim}`);
    if (!ok) {
      if (detail !== undefined) for (const l of detail.split('\n')) this.line(`     ${l}`);
      throw new LabCheckFailed(claim);
    }
  }

  /** Seconds since the lab started. */
  elapsedS(): string {
    return ((performance.now() - this.started) / 1000).toFixed(1);
  }
}
