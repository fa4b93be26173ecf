import { defineConfig } from 'vitest/config';

// Benchmarks written as vitest files (big migrations that do not belong in `pnpm test`).
export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    include: ['bench/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
