export * from './page-bitmap.js';
export * from './policy.js';
