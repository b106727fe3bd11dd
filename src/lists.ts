/**
 * Per-batch work lists, emptied after every frame batch.
 *
 * Why not `list.length = 0`: V8 has no fast path for storing an array's length; every such store
 * leaves optimized code for the runtime (Runtime_StoreCallbackProperty → JSArray::SetLength),
 * about 50 ns on this machine, where popping an element is ~2 ns inline. A round trip empties
 * several one-element lists per wake-up (perf on the 1-byte round-trip benchmark: ~3 % of
 * vmnat's user time went to length stores). Long lists (a bulk batch of ~170 frames) still take
 * the one store: it is cheaper than that many pops.
 */
export function emptyList(list: unknown[]): void {
  if (list.length > 16) {
    list.length = 0;
    return;
  }
  while (list.length > 0) list.pop();
}
