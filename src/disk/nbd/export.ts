/** What a server exports and what each of its connections shares. */
import type { BlockDevice } from '../block-device.js';
import type { Logger } from '../../core/log.js';
import type { IoOrder } from './io-order.js';

/** One device under one name. */
export interface NbdExport {
  name: string;
  description?: string;
  device: BlockDevice;
  readOnly: boolean;
}

export interface ConnectionContext {
  export: NbdExport;
  order: IoOrder;
  log: Logger;
  /** True once the server is fenced or closing: no new export may be opened. */
  refusing(): boolean;
}
