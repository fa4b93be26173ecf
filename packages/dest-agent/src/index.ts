export * from './errors.js';
export * from './image-store.js';
export * from './session.js';
export * from './server.js';
