/**
 * The daemon's idle collector: one collection after a burst of activity goes quiet, none while
 * activity continues, none when nothing happened. The checks are driven by hand (tick), and once by
 * the real timer.
 */
import { IdleCollector } from '../src/daemon/idle-gc';

test('collects once per quiet spell that follows activity, never during activity or when idle', () => {
  let collected = 0;
  const c = new IdleCollector(60_000, () => collected++);
  try {
    c.tick();
    c.tick();
    expect(collected).toBe(0); // nothing happened
    c.touch();
    c.tick(); // busy during this period
    c.touch();
    c.tick(); // still busy
    expect(collected).toBe(0);
    c.tick(); // a quiet period after activity
    expect(collected).toBe(1);
    c.tick();
    c.tick();
    expect(collected).toBe(1); // once per quiet spell
    c.touch();
    c.tick();
    c.tick();
    expect(collected).toBe(2);
  } finally {
    c.stop();
  }
});

test('the timer drives the checks', async () => {
  let collected = 0;
  const c = new IdleCollector(20, () => collected++);
  try {
    c.touch();
    for (let i = 0; i < 100 && collected === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(collected).toBe(1);
  } finally {
    c.stop();
  }
});
