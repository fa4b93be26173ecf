import { PROTOCOL_VERSION, encodeMessage, type HelloHeader, type Message } from '../src/index.js';

/** What the protocol tests build their messages from: one session, one mapping, one Hello. */
export const SESSION = '0123456789abcdef0123456789abcdef';

/** One mapping of 4 pages: the heap, at an address above 2^32. */
export const layout = [{ id: 1, start: 0x7f0000000000, pages: 4, prot: 'rw-p', offset: 0, name: '[heap]', migrated: true, indexBase: 0 }];

/** A valid Hello's header (pre-copy of `layout`); spread it to change or add a field. */
export const helloHeader: HelloHeader = {
  magic: 'FCPY',
  version: PROTOCOL_VERSION,
  sessionId: SESSION,
  pageSize: 4096,
  totalPages: 4,
  policy: 'precopy',
  layout,
};

/** A message as it goes on the wire: its frame, in one buffer. */
export const wire = (m: Message) => Buffer.concat(encodeMessage(m));
