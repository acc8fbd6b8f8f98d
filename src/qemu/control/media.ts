/** Removable media: an ISO inserted into or ejected from a CD-ROM drive while the VM runs. */
import type { QmpChannel } from '../qmp.js';

export class Media {
  constructor(private readonly q: QmpChannel) {}

  /** Opens the tray and removes the disc (forced: a guest that locked the tray is overruled). */
  async eject(deviceId: string): Promise<void> {
    await this.q.execute('eject', { id: deviceId, force: true });
  }

  /** Puts `file` (raw, read-only) into the drive and closes the tray. */
  async insert(deviceId: string, file: string): Promise<void> {
    await this.q.execute('blockdev-change-medium', {
      id: deviceId,
      filename: file,
      format: 'raw',
      'read-only-mode': 'read-only',
    });
  }
}
