/**
 * Two 512-byte boot sectors built from bytes in code, so the QEMU layer can boot a real guest
 * without any disk image: the accelerator probe's guest, and a heartbeat guest that tests use to
 * see a VM run, pause and resume before (and beside) the tiny Linux image.
 * Assembled with GNU as (`as --64`, `ld -Ttext 0 --oformat binary`); sources below.
 */
import { writeFile } from 'node:fs/promises';

/**
 * Probe: real mode -> protected mode -> long mode with paging, then writes PROBE_OK to COM1
 * and halts. Source:
 *
 * .code16
 * .globl _start
 * _start:
 *   cli
 *   xor %ax,%ax
 *   mov %ax,%ds
 *   mov %ax,%es
 *   mov %ax,%ss
 *   mov $0x7c00,%sp
 *   mov $0x3f8,%dx
 *   mov $'R',%al
 *   out %al,%dx
 *   lgdtl 0x7c00+gdtr-_start
 *   mov %cr0,%eax
 *   or $1,%eax
 *   mov %eax,%cr0
 *   ljmpl $0x08,$0x7c00+pm-_start
 * .code32
 * pm:
 *   mov $0x10,%ax
 *   mov %ax,%ds
 *   mov %ax,%es
 *   mov %ax,%ss
 *   mov $0x3f8,%dx
 *   mov $'P',%al
 *   out %al,%dx
 *   # zero 0x1000..0x3fff
 *   mov $0x1000,%edi
 *   xor %eax,%eax
 *   mov $0xc00,%ecx
 *   rep stosl
 *   movl $0x2003,0x1000
 *   movl $0x3003,0x2000
 *   movl $0x00000083,0x3000
 *   mov $0x1000,%eax
 *   mov %eax,%cr3
 *   mov %cr4,%eax
 *   or $0x20,%eax
 *   mov %eax,%cr4
 *   mov $0xc0000080,%ecx
 *   rdmsr
 *   or $0x100,%eax
 *   wrmsr
 *   mov %cr0,%eax
 *   or $0x80000000,%eax
 *   mov %eax,%cr0
 *   ljmp $0x18,$0x7c00+lm-_start
 * .code64
 * lm:
 *   mov $0x3f8,%dx
 *   mov $0x7c00+msg-_start,%esi
 * 1:
 *   lodsb
 *   test %al,%al
 *   jz 2f
 *   out %al,%dx
 *   jmp 1b
 * 2:
 *   hlt
 *   jmp 2b
 * .p2align 3
 * gdt:
 *   .quad 0
 *   .quad 0x00cf9a000000ffff
 *   .quad 0x00cf92000000ffff
 *   .quad 0x00af9a000000ffff
 * gdtr:
 *   .word gdtr-gdt-1
 *   .long 0x7c00+gdt-_start
 * msg: .asciz "FLIGHTDECK-PROBE-OK\r\n"
 * .org 510
 * .byte 0x55,0xaa
 */
const PROBE_CODE =
  'fa31c08ed88ec08ed0bc007cbaf803b052ee660f0116d07c0f20c06683c8010f22c066ea2a7c0000080066b810008ed88ec08ed066baf803b050eebf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c7050030000083000000b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f20c00d000000800f22c0ea987c0000180066baf803bed67c0000ac84c07403eeebf8f4ebfd0f1f40000000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00b07c0000464c494748544445434b2d50524f42452d4f4b0d0a';

/**
 * Heartbeat: prints "HB xxxx" (a 16-bit hex counter) to COM1 every 50 ms of guest time, using
 * the BIOS wait service, forever. It ignores ACPI power-off, which makes it a "hung" guest for
 * graceful-shutdown timeouts. Source:
 *
 * .code16
 * .globl _start
 * _start:
 *   cli
 *   xor %ax,%ax
 *   mov %ax,%ds
 *   mov %ax,%ss
 *   mov $0x7c00,%sp
 *   sti
 *   cld
 *   xor %di,%di
 * 1:
 *   mov $0x7c00+msg-_start,%si
 *   call puts
 *   mov %di,%ax
 *   mov $4,%cx
 * 2:
 *   rol $4,%ax
 *   push %ax
 *   and $0xf,%al
 *   add $'0',%al
 *   cmp $'9',%al
 *   jbe 3f
 *   add $7,%al
 * 3:
 *   mov $0x3f8,%dx
 *   out %al,%dx
 *   pop %ax
 *   loop 2b
 *   mov $0x7c00+eol-_start,%si
 *   call puts
 *   inc %di
 *   mov $0x86,%ah
 *   mov $0x0000,%cx
 *   mov $0xc350,%dx
 *   int $0x15
 *   jmp 1b
 * puts:
 *   mov $0x3f8,%dx
 * 4:
 *   lodsb
 *   or %al,%al
 *   jz 5f
 *   out %al,%dx
 *   jmp 4b
 * 5:
 *   ret
 * msg: .asciz "HB "
 * eol: .asciz "\r\n"
 * .org 510
 * .byte 0x55,0xaa
 */
const HEARTBEAT_CODE =
  'fa31c08ed88ed0bc007cfbfc31ffbe4d7ce82d0089f8b90400c1c00450240f04303c3976020407baf803ee58e2ebbe517ce80d0047b486b90000ba50c3cd15ebcdbaf803ac08c07403eeebf8c3484220000d0a';

export const PROBE_OK = 'FLIGHTDECK-PROBE-OK';

/** Disk image size: q35's AHCI/virtio paths refuse to boot from a disk of one sector. */
const IMAGE_BYTES = 1024 * 1024;

function image(hex: string): Buffer {
  const img = Buffer.alloc(IMAGE_BYTES);
  Buffer.from(hex, 'hex').copy(img, 0);
  img[510] = 0x55;
  img[511] = 0xaa;
  return img;
}

export const probeBootImage = (): Buffer => image(PROBE_CODE);
export const heartbeatBootImage = (): Buffer => image(HEARTBEAT_CODE);

/** Writes a raw disk image holding the boot sector; returns its path. */
export async function writeBootImage(path: string, kind: 'probe' | 'heartbeat'): Promise<string> {
  await writeFile(path, kind === 'probe' ? probeBootImage() : heartbeatBootImage());
  return path;
}

/** Parses heartbeat lines ("HB 002a") from serial output. */
export function heartbeatCounts(serial: string): number[] {
  return [...serial.matchAll(/HB ([0-9A-F]{4})\r?\n/g)].map((m) => parseInt(m[1]!, 16));
}
