export * from './constants.js';
export * from './errors.js';
export * from './messages.js';
export * from './range-table.js';
export * from './frame.js';
export * from './channel.js';
export * from './log-format.js';
export * from './layout.js';
