/**
 * The normalized OVF model: what an appliance describes, in bytes and plain names, whatever
 * OVF version, namespace prefixes or vendor dialect the descriptor was written in. The parser
 * produces it, the writer consumes it, and import/export work only with this shape.
 */

export type OvfVersion = '0.9' | '1.x' | '2.x';

export interface OvfFile {
  id: string;
  href: string;
  sizeBytes?: number;
  compression?: string;
  chunkSizeBytes?: number;
}

export type DiskFormat = 'vmdk-streamOptimized' | 'vmdk-sparse' | 'vhd' | 'qcow2' | 'raw' | 'unknown';

export interface OvfDisk {
  diskId: string;
  /** Undefined only when the capacity could not be resolved (a problem is recorded). */
  capacityBytes?: number;
  populatedSizeBytes?: number;
  fileRef?: string;
  format?: string;
  formatKind: DiskFormat;
  parentRef?: string;
}

export interface OvfNetwork {
  name: string;
  description?: string;
}

export interface OvfConfiguration {
  id: string;
  label?: string;
  description?: string;
  default: boolean;
}

export interface OvfProperty {
  key: string;
  /** key with class/instance qualification, as it appears in the OVF environment. */
  fullKey: string;
  type: string;
  qualifiers?: string;
  userConfigurable: boolean;
  password: boolean;
  /** The default value for the selected deployment option. */
  defaultValue?: string;
  label?: string;
  description?: string;
  category?: string;
}

export interface OvfProduct {
  class?: string;
  instance?: string;
  product?: string;
  vendor?: string;
  version?: string;
  fullVersion?: string;
  productUrl?: string;
  vendorUrl?: string;
  appUrl?: string;
  properties: OvfProperty[];
}

export interface OvfStartupItem {
  id: string;
  order: number;
  startDelayS: number;
  stopDelayS: number;
  startAction?: string;
  stopAction?: string;
  waitingForGuest: boolean;
}

/** An element from a namespace we do not interpret (vmw:, vbox:, vcloud:), kept verbatim. */
export interface VendorExtension {
  namespace: string;
  name: string;
  required: boolean;
  xml: string;
}

export type ControllerKind = 'ide' | 'scsi' | 'sata' | 'nvme' | 'usb';

export interface OvfController {
  instanceId: string;
  kind: ControllerKind;
  subtype?: string;
  address?: string;
  name?: string;
}

export interface OvfDiskDevice {
  instanceId: string;
  name?: string;
  /** DiskSection id; absent for an item that describes an empty disk by its own quantity. */
  diskId?: string;
  /** For items without a DiskSection entry (RASD LogicalDisk with VirtualQuantity). */
  capacityBytes?: number;
  controllerId?: string;
  addressOnParent?: string;
}

export interface OvfNic {
  instanceId: string;
  name?: string;
  network?: string;
  adapterType?: string;
  mac?: string;
  addressOnParent?: string;
  connected: boolean;
}

export interface OvfMediaDrive {
  instanceId: string;
  kind: 'cdrom' | 'dvd' | 'floppy';
  name?: string;
  controllerId?: string;
  addressOnParent?: string;
  /** File id from References when the drive holds a packaged image (ovf:/file/...). */
  fileRef?: string;
}

export type SimpleDeviceKind = 'serial' | 'parallel' | 'usb' | 'sound' | 'graphics';

export interface OvfSimpleDevice {
  instanceId: string;
  kind: SimpleDeviceKind;
  subtype?: string;
  name?: string;
}

export interface OvfOs {
  cimId?: number;
  name?: string;
  description?: string;
  version?: string;
  /** vmw:osType or vbox:OSType when the producer wrote one. */
  vendorType?: string;
}

export interface OvfVirtualSystem {
  kind: 'VirtualSystem';
  id: string;
  name: string;
  info?: string;
  os?: OvfOs;
  virtualSystemType?: string;
  transport?: string[];
  vcpus?: number;
  coresPerSocket?: number;
  memoryBytes?: number;
  controllers: OvfController[];
  disks: OvfDiskDevice[];
  nics: OvfNic[];
  drives: OvfMediaDrive[];
  devices: OvfSimpleDevice[];
  products: OvfProduct[];
  eulas: string[];
  annotation?: string;
  extensions: VendorExtension[];
}

export interface OvfCollection {
  kind: 'VirtualSystemCollection';
  id: string;
  name: string;
  info?: string;
  startup: OvfStartupItem[];
  products: OvfProduct[];
  eulas: string[];
  annotation?: string;
  members: OvfEntity[];
  extensions: VendorExtension[];
}

export type OvfEntity = OvfVirtualSystem | OvfCollection;

/** Something that blocks import (a dangling reference, an unresolvable capacity). */
export interface OvfProblem {
  code: `FD_${string}`;
  message: string;
}

export interface OvfEnvelope {
  version: OvfVersion;
  namespace: string;
  lang?: string;
  files: OvfFile[];
  disks: OvfDisk[];
  networks: OvfNetwork[];
  configurations: OvfConfiguration[];
  /** The deployment option the hardware was resolved for. */
  configuration?: string;
  entity: OvfEntity;
  extensions: VendorExtension[];
  warnings: string[];
  problems: OvfProblem[];
}

/** Every VirtualSystem in document order, nested collections flattened. */
export function virtualSystems(entity: OvfEntity): OvfVirtualSystem[] {
  return entity.kind === 'VirtualSystem' ? [entity] : entity.members.flatMap(virtualSystems);
}

export function hasEula(env: OvfEnvelope): boolean {
  const walk = (e: OvfEntity): boolean =>
    e.eulas.length > 0 || (e.kind === 'VirtualSystemCollection' && e.members.some(walk));
  return walk(env.entity);
}
