/**
 * Guest-side packet capture in the classic pcap format (what `tcpdump -r` and Wireshark read).
 *
 * Theory of operation: the engine calls `write(frame, now)` for every frame it receives from or
 * sends to a guest. Records are appended to one in-memory chunk and written to the file with a
 * synchronous write when the chunk fills or when the engine flushes at the end of each batch, so
 * capture costs one memcpy per frame and one syscall per batch. Frames are copied: callers' buffers
 * are reused right after. Timestamps are the wall clock read once at open plus the monotonic
 * hrtime elapsed since: microsecond resolution, and never backwards, so readers show frames in the
 * order they were written (a millisecond wall clock with hrtime's microseconds pasted in went
 * backwards within a millisecond whenever hrtime's digits wrapped).
 */
import fs from 'node:fs';
import { completeL4Checksum } from './stack/wire/checksum.ts';

/** `--pcap FILE` names something vmnat must not write to; `message` is one line. */
export class PcapOpenError extends Error {
  readonly code = 'VMNAT_PCAP_REFUSED';
}

/**
 * Opens FILE for a capture without following a symlink (O_NOFOLLOW) and without truncating it
 * before we know it is a regular file of ours: someone else's file (vmnat may run as root) or a
 * device is refused. A new file is created 0600.
 */
export function openPcapFile(file: string): number {
  const c = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(file, c.O_WRONLY | c.O_CREAT | c.O_NOFOLLOW | c.O_NONBLOCK, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new PcapOpenError(`${file} is a symlink; refusing to follow it`);
    throw new PcapOpenError(`cannot open ${file}: ${code ?? String(err)}`);
  }
  const st = fs.fstatSync(fd);
  const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
  const problem = !st.isFile() ? 'is not a regular file' : st.uid !== uid ? `belongs to uid ${st.uid}, not to us (uid ${uid})` : undefined;
  if (problem !== undefined) {
    fs.closeSync(fd);
    throw new PcapOpenError(`${file} ${problem}; refusing to overwrite it`);
  }
  fs.ftruncateSync(fd, 0);
  return fd;
}

const CHUNK = 1 << 20;
const LINKTYPE_ETHERNET = 1;
const SNAPLEN = 262144;

export class PcapWriter {
  private fd: number;
  private chunk = Buffer.allocUnsafe(CHUNK);
  private used = 0;
  framesWritten = 0;
  /** Wall-clock µs at hrtime 0: wall time of a frame = this + hrtime µs. */
  private readonly epochUs = BigInt(Date.now()) * 1000n - process.hrtime.bigint() / 1000n;

  constructor(file: string) {
    this.fd = openPcapFile(file);
    const header = Buffer.alloc(24);
    header.writeUInt32LE(0xa1b2c3d4, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(SNAPLEN, 16);
    header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
    fs.writeSync(this.fd, header);
  }

  /** Hands the capture to the user vmnat is about to become (fchown: the open file, not a path). */
  chown(uid: number, gid: number): void {
    if (this.fd >= 0) fs.fchownSync(this.fd, uid, gid);
  }

  /**
   * `completeChecksum`: the frame's TCP/UDP checksum holds only the pseudo-header sum (the link
   * completes it, see Link.completesChecksums); the copy in the capture gets the real one, so
   * readers do not flag every segment.
   */
  write(frame: Uint8Array, completeChecksum = false): void {
    if (this.fd < 0) return;
    const len = Math.min(frame.length, SNAPLEN);
    if (this.used + 16 + len > CHUNK) this.flush();
    if (16 + len > CHUNK) return; // cannot happen with SNAPLEN < CHUNK; guards the arithmetic
    const wallUs = this.epochUs + process.hrtime.bigint() / 1000n;
    const c = this.chunk;
    c.writeUInt32LE(Number(wallUs / 1_000_000n), this.used);
    c.writeUInt32LE(Number(wallUs % 1_000_000n), this.used + 4);
    c.writeUInt32LE(len, this.used + 8);
    c.writeUInt32LE(frame.length, this.used + 12);
    c.set(frame.subarray(0, len), this.used + 16);
    if (completeChecksum && len === frame.length) completeL4Checksum(c.subarray(this.used + 16, this.used + 16 + len));
    this.used += 16 + len;
    this.framesWritten++;
  }

  flush(): void {
    if (this.fd < 0 || this.used === 0) return;
    fs.writeSync(this.fd, this.chunk, 0, this.used);
    this.used = 0;
  }

  close(): void {
    if (this.fd < 0) return;
    this.flush();
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}
