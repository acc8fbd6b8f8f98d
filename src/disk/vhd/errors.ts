/**
 * Error codes of the VHD engine and disk tools. They are part of the public contract (the CLI
 * prints them, `disk check --json` lists them, other layers match on them): never rename one.
 *
 *   FD_VHD_BAD_COOKIE        footer is not "conectix" or dynamic header is not "cxsparse"
 *   FD_VHD_BAD_CHECKSUM      footer or dynamic header checksum does not match its bytes
 *   FD_VHD_TRUNCATED         the file ends before a structure or block it must hold
 *   FD_VHD_BAD_HEADER        a header field is impossible (offsets, table size, version, disk type)
 *   FD_VHD_BAD_BLOCK_SIZE    block size is not a power of two in [512 B, 256 MiB]
 *   FD_VHD_BAD_SIZE          virtual size is absurd (not a multiple of 512, zero, beyond 2040 GiB)
 *   FD_VHD_BAT_PAST_EOF      a BAT entry points past the end of the file
 *   FD_VHD_BAT_OVERLAP       a block overlaps another block or the image's metadata
 *   FD_VHD_MISALIGNED        file size, header or BAT offset is not a whole number of sectors (check)
 *   FD_VHD_BAD_LOCATOR       a parent locator points outside the file (check)
 *   FD_VHD_FOOTER_MISMATCH   the footer copy at offset 0 differs from the trailing footer
 *   FD_VHD_FOOTER_MISSING    the trailing footer is gone (crash while the file grew); copy at 0 is good
 *   FD_VHD_PARENT_NOT_FOUND  a differencing disk's parent is at none of the paths its locators name
 *   FD_VHD_PARENT_MISMATCH   a file found at the parent's path has another UUID
 *   FD_VHD_PARENT_TIMESTAMP  the parent's timestamp differs from the one the child recorded
 *   FD_VHD_CHAIN_LOOP        a differencing chain refers back to itself
 *   FD_VHD_CHAIN_TOO_DEEP    more than MAX_CHAIN_DEPTH images in a chain
 *   FD_VHD_PARENT_BROKEN     the parent exists but does not open (check; the parent's own problems follow)
 *   FD_VHD_NOT_DIFFERENCING  merge was asked of an image that has no parent
 *   FD_VHD_SHRINK            resize was asked to make a disk smaller
 *   FD_VHD_MERGE_CONFLICT    a merge journal belongs to another chain
 *   FD_VHD_AZURE_FIXED       --azure with --type dynamic (Azure takes fixed VHDs only)
 *   FD_DISK_NOT_FOUND        the image file does not exist
 *   FD_DISK_EXISTS           create/convert would overwrite an existing file
 *   FD_DISK_BUSY             compact/resize/merge/repair of an image another process has open
 *   FD_DISK_READ_ONLY        a write to an image opened read-only
 *   FD_DISK_OUT_OF_RANGE     I/O past the end of the virtual disk
 *   FD_DISK_BAD_FORMAT       a format name or file format the tool does not handle
 *   FD_CANCELLED             a conversion was cancelled (SIGINT); nothing was left behind
 *   (and from core: FD_TOOL_FAILED / FD_TOOL_MISSING when qemu-img fails or is absent)
 */
import { FdError, type ErrorCode } from '../../core/errors.js';

export function vhdError(code: ErrorCode, message: string, hint?: string, cause?: unknown): FdError {
  return new FdError(code, message, { ...(hint ? { hint } : {}), ...(cause === undefined ? {} : { cause }) });
}

export const REPAIR_HINT = 'run "flightdeck disk check PATH --repair", or restore the image from a backup';
