/** The VM's keyboard and screen: key presses sent as if typed, and screenshots. */
import type { QmpChannel } from '../qmp.js';

export class Display {
  constructor(private readonly q: QmpChannel) {}

  /** Presses the keys together and releases them (QKeyCode names: ctrl, alt, delete, a...). */
  async pressKeys(keys: string[], holdMs = 100): Promise<void> {
    await this.q.execute('send-key', {
      keys: keys.map((k) => ({ type: 'qcode', data: k })),
      'hold-time': holdMs,
    });
  }

  /**
   * Writes the VGA screen to `file` as a PNG (QEMU 7.1+ writes PNG itself). QEMU writes the
   * file, so it must be a path QEMU can write: the VM's run dir.
   */
  async screenshot(file: string, timeoutMs = 5000): Promise<void> {
    await this.q.execute('screendump', { filename: file, format: 'png' }, { timeoutMs });
  }
}
