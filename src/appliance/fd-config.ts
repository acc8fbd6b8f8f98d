/**
 * flightdeck's own settings carried inside an OVF descriptor, the way VMware carries vmw:Config:
 * `<fd:Config fd:key="kernelImage" fd:value="tiny"/>` after the Items of a system's
 * VirtualHardwareSection, where the DMTF schema allows elements of other namespaces. Other
 * importers skip them; flightdeck reads them so an exported VM that boots a kernel from an
 * image (the tiny guest has no boot loader) boots again after import.
 */
import type { OvfVirtualSystem } from '../ovf/model.js';
import { attrNs, escapeXml, parseXml } from '../ovf/xml.js';

export const FD_OVF_NS = 'https://flightdeck.dev/schema/ovf/1';

/**
 * Adds fd:Config elements to each system's hardware section; `perSystem[i]` belongs to the
 * i-th VirtualSystem in document order (the writer emits one hardware section per system).
 * Done on the text because the library's writer does not emit vendor extensions.
 */
export function addFdConfig(descriptor: string, perSystem: Record<string, string>[]): string {
  let i = 0;
  return descriptor.replace(/^( *)<\/VirtualHardwareSection>/gm, (close: string, pad: string) => {
    const cfg = perSystem[i++] ?? {};
    const els = Object.entries(cfg).map(
      ([k, v]) =>
        `${pad}  <fd:Config xmlns:fd="${FD_OVF_NS}" ovf:required="false" fd:key="${escapeXml(k)}" fd:value="${escapeXml(v)}"/>\n`,
    );
    return els.join('') + close;
  });
}

/** The fd:Config settings of one parsed system. */
export function fdConfigOf(vs: OvfVirtualSystem): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of vs.extensions) {
    if (e.namespace !== FD_OVF_NS || e.name !== 'Config') continue;
    const el = parseXml(e.xml, 'fd:Config');
    const k = attrNs(el, FD_OVF_NS, 'key');
    const v = attrNs(el, FD_OVF_NS, 'value');
    if (k !== undefined && v !== undefined) out[k] = v;
  }
  return out;
}

/** vmw:Config firmware="efi" (ovftool's way of saying UEFI). */
export function vmwFirmware(vs: OvfVirtualSystem): 'bios' | 'uefi' | undefined {
  for (const e of vs.extensions) {
    if (e.name !== 'Config' || !e.namespace.startsWith('http://www.vmware.com/schema/ovf')) continue;
    const el = parseXml(e.xml, 'vmw:Config');
    if (attrNs(el, e.namespace, 'key') !== 'firmware') continue;
    return attrNs(el, e.namespace, 'value') === 'efi' ? 'uefi' : 'bios';
  }
  return undefined;
}
