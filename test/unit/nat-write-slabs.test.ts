import { describe, expect, it } from 'vitest';
import { WriteSlabs, type WriteSlab } from '../../src/nat/write-slabs.ts';

describe('WriteSlabs', () => {
  it('copies stay intact while later copies are made, until released', () => {
    const slabs = new WriteSlabs(64 * 1024, 2);
    const src = new Uint8Array(5000);
    const held: { copy: Buffer; fill: number; slab: WriteSlab | undefined }[] = [];
    for (let i = 0; i < 100; i++) {
      src.fill(i);
      const copy = slabs.copy(src);
      held.push({ copy, fill: i, slab: slabs.lastSlab });
      src.fill(0xee); // the source is reused at once, as the link's receive buffer is
    }
    for (const h of held) {
      expect(h.copy.length).toBe(5000);
      expect(h.copy.every((b) => b === h.fill)).toBe(true);
    }
    expect(slabs.stats.slabsAllocated).toBeGreaterThanOrEqual(8);
  });

  it('reuses released slabs instead of allocating, and keeps at most keepFree idle', () => {
    const slabs = new WriteSlabs(64 * 1024, 2);
    const src = new Uint8Array(16 * 1024);
    // Steady state: each copy released before the next (a fast host socket).
    for (let i = 0; i < 1000; i++) {
      slabs.copy(src);
      slabs.release(slabs.lastSlab);
    }
    expect(slabs.stats.slabsAllocated).toBe(1);
    // A burst of 40 outstanding copies (10 slabs), then all released: at most 2 kept.
    const out = [];
    for (let i = 0; i < 40; i++) {
      slabs.copy(src);
      out.push(slabs.lastSlab);
    }
    const allocatedAfterBurst = slabs.stats.slabsAllocated;
    for (const s of out) slabs.release(s);
    for (let i = 0; i < 40; i++) {
      slabs.copy(src);
      slabs.release(slabs.lastSlab);
    }
    expect(slabs.stats.slabsAllocated).toBe(allocatedAfterBurst);
    for (let i = 0; i < 40; i++) {
      slabs.copy(src);
      out.push(slabs.lastSlab);
    }
    // Only the two idle slabs kept (plus the current one) were reused; the rest are new.
    expect(slabs.stats.slabsAllocated - allocatedAfterBurst).toBeGreaterThanOrEqual(10 - 3);
  });

  it('gives oversized payloads their own buffer', () => {
    const slabs = new WriteSlabs(64 * 1024, 2);
    const copy = slabs.copy(new Uint8Array(20_000).fill(3));
    expect(slabs.lastSlab).toBeUndefined();
    expect(copy.every((b) => b === 3)).toBe(true);
    expect(slabs.stats.oversized).toBe(1);
    slabs.release(slabs.lastSlab); // a no-op
  });
  it('append grows the latest copy in place, and refuses when something was carved after it or the slab is full', () => {
    const slabs = new WriteSlabs(1024, 2);
    const a = slabs.copy(Uint8Array.of(1, 2, 3));
    const slabA = slabs.lastSlab;
    const ab = slabs.append(a, Uint8Array.of(4, 5));
    expect(ab && [...ab]).toEqual([1, 2, 3, 4, 5]);
    expect(ab!.byteOffset).toBe(a.byteOffset);
    // Another flow's copy comes next: the first can no longer grow.
    const other = slabs.copy(Uint8Array.of(9));
    expect(slabs.append(ab!, Uint8Array.of(6))).toBeUndefined();
    expect([...other]).toEqual([9]);
    const more = slabs.append(other, new Uint8Array(2000));
    expect(more).toBeUndefined(); // no room in a 1 KiB slab
    // One release per copy, however often it grew: the slab starts over when both are back.
    slabs.release(slabA);
    slabs.release(slabs.lastSlab);
    const c = slabs.copy(Uint8Array.of(7));
    expect(c.byteOffset).toBe(a.byteOffset);
    expect(slabs.stats.slabsAllocated).toBe(1);
  });
});
