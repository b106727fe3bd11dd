/**
 * The link layer's entry point: a `LinkSpec` from the CLI becomes an open `Link`.
 *
 * Theory of operation: one class per transport, all behind `Link` (types.ts).
 *   socket PATH    SocketLink  unix datagram socket we bind; the guest is learned (vfkit, qemu dgram)
 *   fd N           FdLink      an inherited datagram socket (socketpair end)
 *   stream PATH    StreamLink  unix stream socket we listen on, qemu length-prefixed framing
 *   tap NAME       TapLink     a TAP device, optionally in another network namespace
 * `spawnWithSocketpair` serves `vmnat -- COMMAND`: the child gets one end of a socketpair as fd 4.
 *
 * Errors opening a link are `LinkError`s with a stable `code` (errors.ts): EADDRINUSE_LIVE when a
 * live process serves the path (the CLI exits 2), EPATH_NOT_SOCKET, EFD_TYPE, ESYSTEM (with the
 * errno in `errno`).
 */
import type { Link } from './types.ts';
import { SocketLink } from './socket.ts';
import { FdLink } from './fd.ts';
import { StreamLink } from './stream.ts';
import { TapLink } from './tap.ts';
import type { LinkOptions } from './native-link.ts';

export type LinkSpec =
  | { kind: 'socket'; path: string; offload?: boolean }
  | { kind: 'fd'; fd: number; offload?: boolean }
  | { kind: 'stream'; path: string }
  | { kind: 'tap'; name: string; netnsPath?: string; netnsPid?: number };

export type OpenLinkOptions = LinkOptions;

/** Opens the transport `spec` names. The link delivers frames once started. */
export async function openLink(spec: LinkSpec, options: OpenLinkOptions = {}): Promise<Link> {
  switch (spec.kind) {
    case 'socket':
      return SocketLink.open(spec.path, spec.offload ? { ...options, offload: true } : options);
    case 'fd':
      return FdLink.adopt(spec.fd, spec.offload ? { ...options, offload: true } : options);
    case 'stream':
      return StreamLink.open(spec.path, options);
    case 'tap':
      return TapLink.open(spec, options);
    default:
      return assertNever(spec);
  }
}

function assertNever(x: never): never {
  throw new Error(`openLink: unknown link spec ${JSON.stringify(x)}`);
}

export type { Link, LinkKind, LinkStats, FrameBatchHandler } from './types.ts';
export { createLinkStats } from './types.ts';
export { LinkError, type LinkErrorCode } from './errors.ts';
export { SocketLink } from './socket.ts';
export { FdLink } from './fd.ts';
export { StreamLink } from './stream.ts';
export { TapLink, type TapSpec } from './tap.ts';
export { prepareSpawnWithSocketpair, spawnWithSocketpair, type PreparedSpawn, type SpawnOptions, type SpawnedGuest } from './spawn.ts';
export type { LinkOptions } from './native-link.ts';
