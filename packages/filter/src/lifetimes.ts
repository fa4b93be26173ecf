import type { PageBitmap } from './page-bitmap.js';

// How long the process's mappings live, learned online from the pages mapped at each sample.
//
// A process that maps and unmaps memory as it runs (an allocator's large blocks, a garbage
// collector's young generation, a compiler's arenas, a database's sort memory) frees most of
// what it maps soon after: a page sent and then unmapped before the migration ends was sent for
// nothing, and a page held back until its mapping is gone is never sent. This model forecasts,
// for the pages of each mapping born while it watched, the probability that the mapping is gone
// within h samples, from the lifetimes of the mappings it saw end (Kaplan-Meier, weighed by
// pages, the mappings still alive counted as censored at their age).
//
// Pages mapped when it began watching have no known birth: they are left out, of the estimate and
// of the forecast (a process's long-lived memory: its heap, its libraries). A process that never
// unmaps anything is forecast to keep every page (no lifetime ever ended), and one that only
// grows likewise: nothing changes for it.

/** Lifetimes longer than this many samples (of 50 ms: about 7 minutes) count as this long. */
const MAX_LIFE = 8192;

/** Pages born in the same sample, contiguous: one mapping (or part of one). */
interface Run {
  start: number;
  end: number;
  birth: number;
}

export class MappingLifetimes {
  /** Samples observed. */
  private n = 0;
  private prev: PageBitmap | null = null;
  /** The runs of pages born while watched that are still mapped, sorted by start. */
  private runs: Run[] = [];
  /** Pages whose mapping ended at each lifetime (samples). */
  private readonly deaths = new Float64Array(MAX_LIFE + 1);
  private deathCount = 0;
  /** Survival by age for the plan being made (computed once per sample). */
  private survival: Float64Array | null = null;
  private survivalAt = -1;

  /** Pages born while watched whose mapping has ended, and pages born while watched still mapped. */
  get counts(): { ended: number; alive: number; runs: number } {
    let alive = 0;
    for (const r of this.runs) alive += r.end - r.start;
    return { ended: this.deathCount, alive, runs: this.runs.length };
  }

  /** The pages mapped at this sample (the live agent's page space, a trace's). */
  observe(live: PageBitmap): void {
    const prev = this.prev;
    if (prev === null) {
      this.prev = live.clone();
      this.n = 1;
      return;
    }
    this.n++;
    const size = Math.max(prev.size, live.size);
    const was = prev.size === size ? prev : prev.resized(size);
    const now = live.size === size ? live : live.resized(size);
    this.ended(was, now);
    this.born(was, now);
    this.prev = now === live ? live.clone() : now;
  }

  /** Records the lifetimes of the runs whose pages left the live set, and trims them. */
  private ended(was: PageBitmap, now: PageBitmap): void {
    if (this.runs.length === 0) return;
    const gone = was.clone().andNot(now);
    if (gone.isEmpty()) return;
    const kept: Run[] = [];
    for (const r of this.runs) {
      const died = gone.countRange(r.start, r.end);
      if (died === 0) {
        kept.push(r);
        continue;
      }
      this.died(this.n - r.birth, died);
      // What is still mapped of it, in runs.
      let start = -1;
      for (let p = r.start; p <= r.end; p++) {
        const alive = p < r.end && now.has(p);
        if (alive && start < 0) start = p;
        if (!alive && start >= 0) {
          kept.push({ start, end: p, birth: r.birth });
          start = -1;
        }
      }
    }
    this.runs = kept;
  }

  private died(lifetime: number, pages: number): void {
    this.deaths[Math.min(MAX_LIFE, Math.max(1, lifetime))] += pages;
    this.deathCount += pages;
  }

  /** Adds the runs of pages mapped now and not at the last sample, born at this sample. */
  private born(was: PageBitmap, now: PageBitmap): void {
    const fresh = now.clone().andNot(was);
    if (fresh.isEmpty()) return;
    const added: Run[] = [];
    fresh.forEachRun((start, end) => void added.push({ start, end, birth: this.n }));
    const out = this.runs.concat(added);
    if (this.runs.length > 0 && added[0].start < this.runs[this.runs.length - 1].end) out.sort((a, b) => a.start - b.start);
    this.runs = out;
  }

  /**
   * S(a): the share of pages born while watched whose mapping lives a samples or more
   * (Kaplan-Meier over the ended lifetimes and the ages of those still alive, by pages).
   */
  private survivalByAge(): Float64Array {
    if (this.survival !== null && this.survivalAt === this.n) return this.survival;
    const alive = new Float64Array(MAX_LIFE + 1);
    for (const r of this.runs) alive[Math.min(MAX_LIFE, this.n - r.birth)] += r.end - r.start;
    let atRisk = 0;
    for (let a = 0; a <= MAX_LIFE; a++) atRisk += this.deaths[a] + alive[a];
    const s = new Float64Array(MAX_LIFE + 2);
    s[0] = 1;
    for (let a = 0; a <= MAX_LIFE; a++) {
      const d = this.deaths[a];
      s[a + 1] = atRisk > 0 ? s[a] * (1 - d / atRisk) : s[a];
      atRisk -= d + alive[a];
    }
    this.survival = s;
    this.survivalAt = this.n;
    return s;
  }

  /** P(a page whose mapping is `age` samples old is unmapped within h more), 0 without an ended lifetime. */
  goneWithin(age: number, h: number): number {
    if (this.deathCount === 0) return 0;
    const s = this.survivalByAge();
    const at = (a: number) => s[Math.min(MAX_LIFE + 1, Math.max(0, Math.floor(a)))];
    const s0 = at(age + 1); // alive at `age` (the sample that saw it): it lived past age
    if (!(s0 > 0)) return 0;
    return Math.max(0, (s0 - at(age + 1 + h)) / s0);
  }

  /**
   * Adds to `out` the pages of `pages` whose mapping is gone within h samples with a probability
   * over `threshold`; returns the expected number of them gone.
   */
  addLikelyGone(pages: PageBitmap, h: number, threshold: number, out: PageBitmap): number {
    if (this.deathCount === 0 || this.runs.length === 0) return 0;
    let expected = 0;
    for (const r of this.runs) {
      const q = this.goneWithin(this.n - r.birth, h);
      if (!(q > threshold)) continue;
      for (let p = r.start; p < Math.min(r.end, pages.size, out.size); p++) {
        if (!pages.has(p)) continue;
        out.set(p);
        expected += q;
      }
    }
    return expected;
  }

  resize(totalPages: number): void {
    if (this.prev && this.prev.size !== totalPages) this.prev = this.prev.resized(totalPages);
  }

  /** Bytes held: the last live set, the runs (about 48 bytes each as JavaScript objects), the lifetimes. */
  byteSize(): number {
    return (this.prev ? this.prev.raw.byteLength : 0) + this.runs.length * 48 + this.deaths.byteLength;
  }
}
