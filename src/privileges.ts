/**
 * Dropping root once what needs it is done.
 *
 * Theory of operation: `--tap` (a TAP device, another network namespace) needs root or
 * CAP_NET_ADMIN, so people run `sudo vmnat --tap …`. Nothing vmnat does afterwards needs root, and
 * it parses every frame a guest sends: so, as vmnet-helper does, once the links are open (and the
 * engine, the capture file and the port forwards, which may bind ports below 1024) vmnat becomes
 * the invoking user — `--user NAME|UID`, else the `SUDO_UID`/`SUDO_GID` sudo sets — and cannot
 * become root again: supplementary groups first (initgroups, or just the primary group for a uid
 * without a passwd entry), then setgid, then setuid, which with a real, effective and saved uid
 * all changed is irreversible. Running as root without either (a root shell, the test suite)
 * stays root, as before.
 *
 * After the drop: the control API socket is created by the user (so the user can connect to it);
 * new ICMP ping sockets are opened as the user, so outside pings need the user's group in
 * net.ipv4.ping_group_range, as for any unprivileged vmnat; a --pcap file created as root is
 * handed to the user with fchown on its open descriptor (never chown by path).
 */
import { readFileSync } from 'node:fs';

/** Whom to become. */
export interface DropTarget {
  uid: number;
  gid: number;
  /** For initgroups (supplementary groups from /etc/group); absent for a bare uid. */
  name: string | undefined;
  /** Where it came from, for messages. */
  source: '--user' | 'SUDO_UID';
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

function readPasswd(file: string): PasswdEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) });
  }
  return out;
}

/**
 * Resolves `--user` (a name from /etc/passwd or a numeric uid) or, without it, SUDO_UID/SUDO_GID.
 * Returns an error string for a user that does not exist or a malformed value; undefined target
 * when there is nothing to drop to.
 */
export function resolveDropTarget(user: string | undefined, env: NodeJS.ProcessEnv, passwdFile = '/etc/passwd'): DropTarget | string | undefined {
  const passwd = readPasswd(passwdFile);
  if (user !== undefined) {
    if (/^\d+$/.test(user)) {
      const uid = Number(user);
      if (uid > 0xffff_fffe) return `${user} is not a valid uid`;
      const e = passwd.find((p) => p.uid === uid);
      return { uid, gid: e?.gid ?? uid, name: e?.name, source: '--user' };
    }
    const e = passwd.find((p) => p.name === user);
    if (e === undefined) return `no user named ${JSON.stringify(user)} (not in ${passwdFile})`;
    return { uid: e.uid, gid: e.gid, name: e.name, source: '--user' };
  }
  const sudoUid = env['SUDO_UID'];
  if (sudoUid === undefined || !/^\d+$/.test(sudoUid)) return undefined;
  const uid = Number(sudoUid);
  if (uid === 0) return undefined; // sudo from root: root it is
  const sudoGid = env['SUDO_GID'];
  const e = passwd.find((p) => p.uid === uid);
  const gid = sudoGid !== undefined && /^\d+$/.test(sudoGid) ? Number(sudoGid) : (e?.gid ?? uid);
  return { uid, gid, name: e?.name, source: 'SUDO_UID' };
}

/** Becomes `t` for good. Throws if the kernel refuses or root could be regained. */
export function dropPrivileges(t: DropTarget): void {
  if (process.setgroups === undefined || process.setgid === undefined || process.setuid === undefined) throw new Error('this platform cannot change users');
  // process.initgroups exists on POSIX Node; @types/node 20 does not declare it.
  const initgroups = (process as NodeJS.Process & { initgroups?: (user: string, extraGroup: number) => void }).initgroups;
  if (t.name !== undefined && initgroups !== undefined) initgroups.call(process, t.name, t.gid);
  else process.setgroups([t.gid]);
  process.setgid(t.gid);
  process.setuid(t.uid);
  // setuid as root sets the real, effective and saved uid: check that no way back is left.
  if (process.getuid?.() !== t.uid || process.geteuid?.() !== t.uid) throw new Error(`still uid ${process.getuid?.()} after setuid(${t.uid})`);
  if (t.uid !== 0) {
    let regained = false;
    try {
      process.setuid(0);
      regained = true;
    } catch {
      // expected: EPERM
    }
    if (regained) throw new Error('setuid(0) succeeded after the drop');
  }
}
