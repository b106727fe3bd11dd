/** A fake engine behind the control API: fixed leases/flows, events on demand, a real PortForwarder. */
import type { ApiBackend, ApiFlow, ApiLease, FlowEvent, LeaseEvent } from '../../src/api/server.ts';
import type { PortForwarder } from '../../src/portfwd/forwarder.ts';

export class FakeBackend implements ApiBackend {
  leaseList: ApiLease[] = [
    { ip: '10.0.2.15', mac: '52:54:00:12:34:56', hostname: 'vm1', state: 'bound', static: false, expires_in_s: 86000 },
    { ip: '10.0.2.16', mac: '52:54:00:12:34:57', state: 'offered', static: false, expires_in_s: 50 },
  ];
  flowList: ApiFlow[] = [{ proto: 'tcp', guest: '10.0.2.15:40000', remote: '192.0.2.1:443', state: 'established', bytes_from_guest: 100, bytes_to_guest: 2000 }];
  readonly listeners = new Set<(e: LeaseEvent | FlowEvent) => void>();
  failing: string | undefined;
  constructor(readonly forwards: PortForwarder) {}
  private check(what: string): void {
    if (this.failing === what) throw new Error(`${what} exploded`);
  }
  leases(): ApiLease[] {
    this.check('leases');
    return this.leaseList;
  }
  flows(): ApiFlow[] {
    this.check('flows');
    return this.flowList;
  }
  stats(): Record<string, unknown> {
    this.check('stats');
    return { nat: { refused: 3 }, portfwd: this.forwards.stats };
  }
  config(): Record<string, unknown> {
    this.check('config');
    return { network: '10.0.2.0/24' };
  }
  subscribe(listener: (e: LeaseEvent | FlowEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(e: LeaseEvent | FlowEvent): void {
    for (const l of this.listeners) l(e);
  }
}
