/**
 * The shape every disk backend (VHD chain, raw file, VMDK reader) offers to the data path:
 * the NBD server, converters and copy loops talk only to this interface.
 */
export interface Extent {
  offset: number;
  length: number;
  /** No data is allocated here in the top image or any parent: reads return zeros. */
  hole: boolean;
  /** Reads return zeros (true for holes; may also be true for allocated all-zero data). */
  zero: boolean;
}

export interface WriteOptions {
  /** Force unit access: durable before the call returns. */
  fua?: boolean;
}

export interface BlockDevice {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void>;
  /** Makes the range read as zeros; may deallocate when `mayTrim` is set. */
  writeZeroes(offset: number, length: number, opts?: WriteOptions & { mayTrim?: boolean }): Promise<void>;
  /** Advisory discard: data in the range may read back as zeros or as before. */
  trim(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  /** Allocation map of [offset, offset+length), in order, covering the range exactly. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /**
   * The same map when the device can give it from memory without I/O, else null. Optional: it
   * lets the NBD server answer reads of holes at once, without reading or sending zeros.
   */
  cachedStatus?(offset: number, length: number): Extent[] | null;
  close(): Promise<void>;
}
