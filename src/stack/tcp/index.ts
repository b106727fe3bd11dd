/**
 * vmnat's TCP endpoint (sans-I/O): what the NAT adapter needs. See README.md in this folder.
 */
export { TcpConnection } from './connection.ts';
export type { CloseReason, InputResult, TcpHost, TcpInfo, TcpOpenOptions, TcpState } from './api.ts';
export {
  TCP_DEFAULTS,
  createTcpStats,
  resolveTcpConfig,
  windowScaleFor,
  type TcpConfig,
  type TcpKeepaliveConfig,
  type TcpStats,
} from './config.ts';
export { TcpOutSegment, TcpSegment, fillSegment, rstForSegment, segLen, tcpOutLength, writeTcpOut } from './segment.ts';
export { type Seq, seqAdd, seqGe, seqGt, seqLe, seqLt, seqOf, seqSub } from './seq.ts';
