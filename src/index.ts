/**
 * vmnat as a library: `import { startVmnat, ApiClient } from 'vmnat'`.
 *
 * `startVmnat()` runs the engine as a child process and answers a typed handle (ready line,
 * forwards, leases, events, close); `ApiClient` talks to the control socket of any running vmnat
 * (`--api-socket`). Nothing here loads the engine or its native addon into the caller's process.
 */
export { startVmnat, vmnatArgs, VmnatStartError } from './api/start.ts';
export type { VmnatExit, VmnatHandle, VmnatLogLevel, VmnatOptions, VmnatReady } from './api/start.ts';
export { ApiClient, ApiError, ApiUnreachableError } from './api/client.ts';
export type { ApiResponse, ForwardListItem, VmnatEvent } from './api/client.ts';
export type { ApiEvent, ApiFlow, ApiLease, ApiPort, FlowEvent, LeaseEvent } from './api/server.ts';
export type { ForwardEvent } from './portfwd/forwarder.ts';
export type { FilterEvent, FilterJson } from './filter/filter.ts';
export type { ForwardProto, ForwardRuleJson } from './portfwd/rules.ts';
export { ForwardRuleError } from './portfwd/rules.ts';
