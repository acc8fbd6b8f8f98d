/** A scan in its own process, for the test that kills it midway: argv image, db, stateDir, cli... */
import { scanDisk } from '../../src/host/scan/scan.js';

const [image, databaseDir, stateDir, ...cliCommand] = process.argv.slice(2);
await scanDisk({ source: { kind: 'image', path: image! }, databaseDir: databaseDir!, stateDir: stateDir!, cliCommand });
