import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFdError } from '../core/errors.js';
import { attrNs, elements, parseXml, textOf } from './xml.js';
import { parseOvf } from './parse.js';

const refused = (code: string) => (err: unknown) => isFdError(err, code as `FD_${string}`);

test('an external entity (XXE) is refused before anything is parsed', () => {
  const xml = `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>`;
  assert.throws(() => parseXml(xml, 't'), refused('FD_OVF_DTD_REFUSED'));
});

test('a billion-laughs entity bomb is refused without expanding anything', () => {
  const defs = Array.from({ length: 10 }, (_, i) => `<!ENTITY l${i + 1} "${`&l${i};`.repeat(10)}">`).join('');
  const xml = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY l0 "lol">${defs}]><lolz>&l10;</lolz>`;
  assert.throws(() => parseXml(xml, 't'), refused('FD_OVF_DTD_REFUSED'));
});

test('a bare DOCTYPE (no entities) and a parameter entity are refused too', () => {
  assert.throws(
    () => parseXml('<!DOCTYPE Envelope SYSTEM "http://x/y.dtd"><Envelope/>', 't'),
    refused('FD_OVF_DTD_REFUSED'),
  );
  assert.throws(() => parseXml('<!doctype x><x/>', 't'), refused('FD_OVF_DTD_REFUSED'));
});

test('an entity that was never declared is an error, not left as text', () => {
  assert.throws(() => parseXml('<x>&nope;</x>', 't'), refused('FD_OVF_BAD_XML'));
});

test('predefined and numeric character references decode', () => {
  const x = parseXml('<x a="1 &amp; &#50;">&lt;&#x41;&gt; &quot;q&quot;</x>', 't');
  assert.equal(textOf(x), '<A> "q"');
  assert.equal(attrNs(x, undefined, 'a'), '1 & 2');
});

test('prefixes resolve by namespace URI, so any prefix works', () => {
  const xml = `<e:Envelope xmlns:e="http://schemas.dmtf.org/ovf/envelope/1" xmlns:r="urn:r">
    <e:VirtualSystem e:id="vm1"><e:Info/><e:VirtualHardwareSection><e:Info/>
      <e:Item><r:InstanceID>1</r:InstanceID></e:Item></e:VirtualHardwareSection></e:VirtualSystem></e:Envelope>`;
  const env = parseOvf(xml);
  assert.equal(env.version, '1.x');
  assert.equal(env.entity.id, 'vm1');
  const root = parseXml(xml, 't');
  assert.equal(elements(root)[0]!.ns, 'http://schemas.dmtf.org/ovf/envelope/1');
});

test('an undeclared prefix and mismatched tags are FD_OVF_BAD_XML', () => {
  assert.throws(() => parseXml('<a:b/>', 't'), refused('FD_OVF_BAD_XML'));
  assert.throws(() => parseXml('<a><b></a>', 't'), refused('FD_OVF_BAD_XML'));
});

test('a root that is not an OVF Envelope is FD_OVF_NOT_OVF', () => {
  assert.throws(() => parseOvf('<html/>'), refused('FD_OVF_NOT_OVF'));
  assert.throws(() => parseOvf('<Envelope xmlns="urn:other"/>'), refused('FD_OVF_NOT_OVF'));
  assert.throws(
    () => parseOvf('<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References/></Envelope>'),
    refused('FD_OVF_NO_VIRTUAL_SYSTEM'),
  );
});

test('UTF-16 descriptors (with a BOM) decode to the same model as UTF-8', async () => {
  const { decodeDescriptor } = await import('./package.js');
  const xml = `<?xml version="1.0" encoding="UTF-16"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem ovf:id="vm-é"><Info/><VirtualHardwareSection><Info/></VirtualHardwareSection></VirtualSystem></Envelope>`;
  const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(xml, 'utf16le')]);
  const be = Buffer.from(le);
  be.swap16();
  for (const buf of [le, be, Buffer.from(xml)]) assert.equal(parseOvf(decodeDescriptor(buf)).entity.id, 'vm-é');
});
