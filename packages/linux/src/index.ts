export * from './libc.js';
export * from './proc-maps.js';
export * from './page-reader.js';
export * from './freezer.js';
export * from './inject.js';
export * from './uffd-tracker.js';
export * from './soft-dirty-tracker.js';
export * from './create-tracker.js';
