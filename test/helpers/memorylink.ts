/**
 * An in-memory Link for unit tests that drive a real Engine or Switch: frames given to
 * `handler` play the guest's side, and every frame vmnat sends is kept (copied) in `sent`.
 */
import { createLinkStats, type FrameBatchHandler, type Link, type LinkKind } from '../../src/link/types.ts';

export class MemoryLink implements Link {
  readonly stats = createLinkStats();
  readonly sent: Uint8Array[] = [];
  handler: FrameBatchHandler | undefined;
  flushes = 0;

  constructor(readonly kind: LinkKind = 'fd') {}

  describe() {
    return {};
  }
  start(handler: FrameBatchHandler): void {
    this.handler = handler;
  }
  send(frame: Uint8Array): boolean {
    this.sent.push(frame.slice());
    return true;
  }
  flush(): void {
    this.flushes++;
  }
  async close(): Promise<void> {}
}
