import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { isFdError } from '../core/errors.js';
import { ovfFixture } from '../../test/ovf/helpers.js';
import { ovfEnvironment, resolveProperties } from './environment.js';
import { parseOvf } from './parse.js';
import { attrNs, elements, parseXml } from './xml.js';
import { OVFENV_NS_1 } from './namespaces.js';

async function csr() {
  return parseOvf(await readFile(ovfFixture('cot/csr1000v.ovf'), 'utf8')).entity;
}

test('user values and defaults become the OVF environment the guest parses', async () => {
  const vs = await csr();
  const values = resolveProperties(vs, { hostname: 'edge-1', 'com.cisco.csr1000v.enable-ssh-server.1': 'true' });
  const xml = ovfEnvironment(vs.id, values);
  const env = parseXml(xml, 'ovf-env.xml');
  const props = elements(elements(env).find((e) => e.local === 'PropertySection')!).map((p) => [
    attrNs(p, OVFENV_NS_1, 'key'),
    attrNs(p, OVFENV_NS_1, 'value'),
  ]);
  assert.deepEqual(
    props.find((p) => p[0] === 'com.cisco.csr1000v.hostname.1'),
    ['com.cisco.csr1000v.hostname.1', 'edge-1'],
  );
  assert.deepEqual(props.find((p) => p[0]!.endsWith('enable-ssh-server.1'))![1], 'true');
  // Defaults the user did not touch are passed through (license defaults to "ax").
  assert.deepEqual(props.find((p) => p[0]!.endsWith('.license.1'))![1], 'ax');
  assert.equal(attrNs(env, OVFENV_NS_1, 'id'), 'com.cisco.csr1000v');
});

test('bad values are refused all at once: type, MaxLen, unknown key, not configurable', async () => {
  const vs = await csr();
  const err = (() => {
    try {
      resolveProperties(vs, {
        hostname: 'x'.repeat(64),
        'enable-ssh-server': 'yes',
        nosuch: '1',
        'config-version': '2.0',
      });
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(isFdError(err, 'FD_OVF_BAD_PROPERTY'));
  assert.deepEqual(err.details, [
    'com.cisco.csr1000v.config-version.1 is not user-configurable',
    'hostname takes at most 63 characters (got 64)',
    'enable-ssh-server is a boolean; "yes" is not true or false',
    'nosuch is not a property of com.cisco.csr1000v',
  ]);
});
