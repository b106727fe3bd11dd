/**
 * Deadlines of many flows behind one engine timer: a binary min-heap with lazy invalidation.
 *
 * Theory of operation: each flow reports one deadline (TCP's `nextDeadline()`). `schedule(item,
 * at)` pushes an entry only when `at` is earlier than the entry the item already has in the heap;
 * a later or vanished deadline leaves the old entry, which is recognised as stale when it surfaces
 * (its time is no longer the item's `scheduledAt`) and is dropped, or re-pushed at the item's real
 * deadline. So the heap holds at most a few entries per item, every operation is O(log n), and the
 * engine's timer only ever needs `peek()`.
 */

export interface Scheduled {
  /** Time of this item's live heap entry, or undefined if it has none. Owned by the heap. */
  scheduledAt: number | undefined;
}

export class DeadlineHeap<T extends Scheduled> {
  private times: number[] = [];
  private items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  schedule(item: T, at: number | undefined): void {
    if (at === undefined) return;
    if (item.scheduledAt !== undefined && item.scheduledAt <= at) return;
    item.scheduledAt = at;
    this.push(at, item);
  }

  /** Earliest entry time (possibly stale: popping it then re-arms at the true time). */
  peek(): number | undefined {
    return this.times[0];
  }

  /**
   * Pops every entry due at `now` and calls `fire(item)` for live ones (their `scheduledAt` is
   * cleared first, so `fire` may schedule again).
   */
  popDue(now: number, fire: (item: T) => void): void {
    while (this.times.length > 0 && this.times[0]! <= now) {
      const at = this.times[0]!;
      const item = this.pop();
      if (item.scheduledAt !== at) continue; // stale: superseded by an earlier entry
      item.scheduledAt = undefined;
      fire(item);
    }
  }

  private push(at: number, item: T): void {
    const times = this.times;
    const items = this.items;
    let i = times.length;
    times.push(at);
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (times[parent]! <= at) break;
      times[i] = times[parent]!;
      items[i] = items[parent]!;
      i = parent;
    }
    times[i] = at;
    items[i] = item;
  }

  private pop(): T {
    const times = this.times;
    const items = this.items;
    const top = items[0]!;
    const lastTime = times.pop()!;
    const lastItem = items.pop()!;
    const n = times.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && times[r]! < times[l]! ? r : l;
        if (times[c]! >= lastTime) break;
        times[i] = times[c]!;
        items[i] = items[c]!;
        i = c;
      }
      times[i] = lastTime;
      items[i] = lastItem;
    }
    return top;
  }
}
