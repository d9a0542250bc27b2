import { describe, expect, it } from 'vitest';
import { gcPause } from '../../bench/pipeline-kit.js';

/** bench:pipeline counts each child's GC pauses from its `--trace-gc` lines (Node 20's V8 format). */
describe('gcPause (bench/pipeline-kit)', () => {
  it("reads the main thread's pause of a scavenge and of a mark-compact, reducing or not", () => {
    expect(gcPause('[5073:0x420dbc80]     4311 ms: Scavenge 48.6 (68.3) -> 37.2 (69.8) MB, 10.16 / 0.30 ms  (average mu = 0.980, current mu = 0.980) allocation failure; ')).toBe(10.16);
    expect(
      gcPause(
        '[5086:0x6f92c80]     8584 ms: Mark-Compact (reduce) 25.9 (49.0) -> 17.3 (19.5) MB, 40.86 / 0.08 ms  (+ 20.2 ms in 73 steps since start of marking, biggest step 8.2 ms, walltime since start of marking 74 ms) (average mu = 0.993, current mu = 0.993) finalize incremental marking via task; GC in old space requested',
      ),
    ).toBe(40.86);
    expect(
      gcPause(
        '[5098:0x26ab8c60]      303 ms: Mark-Compact 10.3 (25.7) -> 7.9 (26.5) MB, 2.80 / 0.10 ms  (+ 4.1 ms in 45 steps since start of marking, biggest step 0.8 ms, walltime since start of marking 8 ms) (average mu = 1.000, current mu = 1.000) finalize incremental marking via task; GC in old space requested',
      ),
    ).toBe(2.8);
  });

  it('ignores every other line', () => {
    expect(gcPause('{"level":30,"msg":"Scavenge 1 ms: not a GC line"}')).toBeUndefined();
    expect(gcPause('server listening on 127.0.0.1:3000')).toBeUndefined();
    expect(gcPause('')).toBeUndefined();
  });
});
