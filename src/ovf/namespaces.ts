/**
 * Namespace URIs OVF descriptors use, and the matching rules for the ones real tools write
 * slightly wrong (VirtualBox appends ".xsd" to the SASD/EPASD URIs, DSP0243's own example has a
 * typo in the EPASD URI). Matching is always by URI, never by prefix.
 */
export const OVF_NS_09 = 'http://www.vmware.com/schema/ovf/1/envelope';
export const OVF_NS_1 = 'http://schemas.dmtf.org/ovf/envelope/1';
export const OVF_NS_2 = 'http://schemas.dmtf.org/ovf/envelope/2';
export const RASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
export const VSSD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData';
export const SASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData';
export const EPASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData';
export const CIM_NS = 'http://schemas.dmtf.org/wbem/wscim/1/common';
export const VMW_NS = 'http://www.vmware.com/schema/ovf';
export const VBOX_NS = 'http://www.virtualbox.org/ovf/machine';
export const OVFENV_NS_1 = 'http://schemas.dmtf.org/ovf/environment/1';

/** Any of the CIM settings-data namespaces an Item, StorageItem or EthernetPortItem uses. */
export function isSettingDataNs(ns: string | undefined): boolean {
  return ns !== undefined && /CIM_\w*(AllocationSettingData|SettingData)(\.xsd)?$/.test(ns);
}
