/**
 * Every QEMU id and block node name flightdeck uses, derived from our own device ids: the argv
 * builder names the devices with these, and the control layer finds them again by the same
 * names, so a node is never guessed twice in two places.
 */
export const qemuIds = {
  /** The guest disk's block node (an NBD client of the VM's vdisk). */
  diskNode: (id: string) => `d-${id}`,
  diskDevice: (id: string) => `vd-${id}`,
  cdromDevice: (id: string) => `cd-${id}`,
  cdromNode: (id: string) => `cdm-${id}`,
  netdev: (id: string) => `net-${id}`,
  nicDevice: (id: string) => `nic-${id}`,
  /**
   * A live migration's copy of a disk: on the source the NBD client node (and its mirror job)
   * writing into the target; on the target the NBD export that receives it.
   */
  migrationNode: (id: string) => `mig-${id}`,
  /** A protected VM's mirror of a disk into the standby's vdisk (node and job). */
  protectionNode: (id: string) => `prot-${id}`,
};

/** Whether a block job or node belongs to a migration or a protection mirror. */
export const isMigrationNode = (name: string): boolean => name.startsWith('mig-');
export const isProtectionNode = (name: string): boolean => name.startsWith('prot-');
/** The disk id behind a migration or protection node name. */
export const diskIdOfNode = (name: string): string => name.replace(/^(mig|prot)-/, '');
