import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProbeParser, parseProbeLine } from './probes.js';

test('every probe line kind parses to its typed event', () => {
  assert.deepEqual(parseProbeLine('FD-HB 42 1234567890123 #'), {
    kind: 'heartbeat',
    seq: 42,
    monotonicNs: 1234567890123n,
  });
  assert.deepEqual(parseProbeLine('FD-COUNTER 7 #'), { kind: 'counter', n: 7n });
  assert.deepEqual(parseProbeLine('FD-COUNTER-START 6 #'), { kind: 'counter-start', n: 6n });
  assert.deepEqual(parseProbeLine('FD-UPTIME 12.34 #'), { kind: 'uptime', uptimeS: 12.34 });
  assert.deepEqual(parseProbeLine('FD-CPUS 2 #'), { kind: 'cpus', online: 2 });
  assert.deepEqual(parseProbeLine('FD-MEM 230000 #'), { kind: 'mem', totalKib: 230000 });
  assert.deepEqual(parseProbeLine('FD-READY uptime=2.10 #'), { kind: 'ready', uptimeS: 2.1 });
  assert.deepEqual(parseProbeLine('FD-IP 10.0.2.15 dev=eth0 mac=52:54:00:12:34:56 #'), {
    kind: 'ip',
    address: '10.0.2.15',
    dev: 'eth0',
    mac: '52:54:00:12:34:56',
  });
  assert.deepEqual(parseProbeLine('FD-SEED hostname=web-1 #'), { kind: 'seed', key: 'hostname', value: 'web-1' });
  assert.deepEqual(parseProbeLine('FD-SEED user-data=runcmd: [a=b] #'), {
    kind: 'seed',
    key: 'user-data',
    value: 'runcmd: [a=b]',
  });
  assert.deepEqual(parseProbeLine('FD-OVFENV ip0=192.168.1.5 #'), { kind: 'ovfenv', key: 'ip0', value: '192.168.1.5' });
  assert.deepEqual(parseProbeLine('FD-POWERBTN #'), { kind: 'powerbtn' });
  assert.deepEqual(parseProbeLine('FD-BOOT stage=initramfs uptime=1.52 #'), {
    kind: 'boot-stage',
    stage: 'initramfs',
    uptimeS: 1.52,
  });
  assert.deepEqual(parseProbeLine('FD-SHUTDOWN #\r'), { kind: 'shutdown' });
});

test('a heartbeat cut short by kernel printk is dropped, not read as a smaller timestamp', () => {
  // printk broke in after "FD-HB 9 12": neither fragment is a whole line.
  assert.equal(parseProbeLine('FD-HB 9 12[    3.1] virtio_net virtio1 eth0: link up'), null);
  assert.equal(parseProbeLine('FD-HB 9 12'), null);
  assert.equal(parseProbeLine('34567 #'), null);
  assert.equal(parseProbeLine('xFD-HB 9 1234567 #'), null);
  assert.equal(parseProbeLine('FD-HB 9 #'), null);
  assert.equal(parseProbeLine('FD-COUNTER x #'), null);
});

test('a probe line glued to console text without a newline still parses', () => {
  assert.deepEqual(parseProbeLine('Please press Enter to activate this console. FD-HB 102 3444338556 #\r'), {
    kind: 'heartbeat',
    seq: 102,
    monotonicNs: 3444338556n,
  });
  assert.deepEqual(parseProbeLine('/ # FD-COUNTER 5 #'), { kind: 'counter', n: 5n });
});

test('the stream parser joins lines split across chunks and ignores console noise', () => {
  const p = new ProbeParser();
  assert.deepEqual(p.push('SeaBIOS (version 1.16)\r\nFD-HB 1 10'), []);
  assert.equal(p.pending, 'FD-HB 1 10');
  assert.deepEqual(p.push(Buffer.from('0 #\r\nFD-COUNTER 3 #\nFD-UP')), [
    { kind: 'heartbeat', seq: 1, monotonicNs: 100n },
    { kind: 'counter', n: 3n },
  ]);
  assert.deepEqual(p.push('TIME 1.00 #\n'), [{ kind: 'uptime', uptimeS: 1 }]);
});

test('a UTF-8 character split between chunks survives', () => {
  const p = new ProbeParser();
  const bytes = Buffer.from('FD-SEED user-data=é #\n');
  const cut = bytes.indexOf(0xc3) + 1;
  assert.deepEqual(p.push(bytes.subarray(0, cut)), []);
  assert.deepEqual(p.push(bytes.subarray(cut)), [{ kind: 'seed', key: 'user-data', value: 'é' }]);
});
