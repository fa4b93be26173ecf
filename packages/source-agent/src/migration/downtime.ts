/**
 * The downtime's clock: started at the freeze, marked at the end of each step while the process
 * does not run; each mark adds the time since the previous one to a named part.
 */
export class DowntimeClock {
  readonly parts: Record<string, number> = {};
  private last: number;

  constructor(private readonly frozenAt: number) {
    this.last = frozenAt;
    this.mark('stopCopyMs'); // the clock starts when stop-and-copy ended
  }

  /** Adds the time since the previous mark to `part`. */
  mark(part: string): void {
    const now = performance.now();
    this.parts[part] = (this.parts[part] ?? 0) + now - this.last;
    this.last = now;
  }

  /** From the freeze to the last mark. */
  totalMs(): number {
    return this.last - this.frozenAt;
  }
}
