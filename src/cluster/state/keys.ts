/**
 * Every key of the desired state, built in one place: a record's key is never spelled twice.
 * Prefixes end in "/" and list every record of a kind.
 */
export const keys = {
  vms: 'vms/',
  vm: (id: string) => `vms/${id}`,
  /** The unique-name index: vm-names/NAME holds the VM's id, created with the VM in one txn. */
  vmName: (name: string) => `vm-names/${name}`,
  vmStatuses: 'status/vms/',
  vmStatus: (id: string) => `status/vms/${id}`,
  disks: 'disks/',
  disk: (id: string) => `disks/${id}`,
  images: 'images/',
  image: (name: string) => `images/${name}`,
  networks: 'networks/',
  network: (name: string) => `networks/${name}`,
  /** A fixed address taken on a cluster network (by CAS): netips/NET/IP holds the VM id. */
  netIps: 'netips/',
  netIp: (network: string, ip: string) => `netips/${network}/${ip}`,
  /** A host's address slot on a cluster network, and the slot's claim. */
  netSlot: (network: string, host: string) => `netslots/${network}/${host}`,
  netSlotUsed: (network: string, slot: number) => `netslot-used/${network}/${slot}`,
  hosts: 'hosts/',
  host: (name: string) => `hosts/${name}`,
  alives: 'alive/',
  alive: (name: string) => `alive/${name}`,
  protections: 'protection/',
  protection: (vmId: string) => `protection/${vmId}`,
  migrations: 'migrations/',
  migration: (vmId: string) => `migrations/${vmId}`,
  tasks: 'tasks/',
  task: (id: string) => `tasks/${id}`,
  tokens: 'tokens/',
  token: (id: string) => `tokens/${id}`,
  /** Single-use console tickets (SHA-256 of the secret): any host redeems one. */
  consoleTickets: 'console-tickets/',
  groups: 'groups/',
  group: (name: string) => `groups/${name}`,
} as const;

/** The part of a key after its prefix (the id or name). */
export const idOf = (prefix: string, key: string): string => key.slice(prefix.length);
