/** The tiny guest's kernel command line: quiet for people, or with the console probes for tests. */
/**
 * Kernel command line for direct kernel boot. loglevel=1 keeps printk off the console (it
 * would cut into probe lines); memhp_default_state=online makes hot-plugged memory usable
 * without udev. (Skipping the crypto self-tests was tried: no measurable change in QEMU CPU
 * time to the first heartbeat, so it is not here.)
 */
export const TINY_CMDLINE = 'console=ttyS0 root=/dev/vda quiet loglevel=1 memhp_default_state=online';
/**
 * On the command line, asks the guest for its console protocol (FD-* lines: heartbeat, counter,
 * echo service, addresses, readiness) that tests and benchmarks read; without it the guest is
 * quiet and offers a login prompt (the demo).
 */
export const TINY_PROBES_ARG = 'fd.probes=1';
export const TINY_PROBE_CMDLINE = `${TINY_CMDLINE} ${TINY_PROBES_ARG}`;

/** The image with the probes asked for on its command line. */
export function withProbes<T extends { cmdline: string }>(img: T): T {
  return img.cmdline.split(' ').includes(TINY_PROBES_ARG)
    ? img
    : { ...img, cmdline: `${img.cmdline} ${TINY_PROBES_ARG}` };
}
