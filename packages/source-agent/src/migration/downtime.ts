/**
 * The downtime's clock: started at the freeze, marked at the end of each step while the process
 * does not run; each mark adds the time since the previous one to a named part.
 */
export class DowntimeClock {
  readonly parts: Record<string, number> = {};
  private last: number;

  constructor(readonly frozenAt: number) {
    this.last = frozenAt;
  }

  /** Adds the time since the previous mark to `part`. */
  mark(part: string): void {
    const now = performance.now();
    this.parts[part] = (this.parts[part] ?? 0) + now - this.last;
    this.last = now;
  }

  /** Takes every part marked so far out of `parts` and puts their sum there as `into`; returns them. */
  fold(into: string): Record<string, number> {
    const taken = { ...this.parts };
    for (const k of Object.keys(taken)) delete this.parts[k];
    this.parts[into] = Object.values(taken).reduce((a, b) => a + b, 0);
    return taken;
  }

  /** From the freeze to the last mark. */
  totalMs(): number {
    return this.last - this.frozenAt;
  }
}
