/** `flightdeck --version`: this checkout's version (package.json) and the Node.js it runs on. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface VersionInfo {
  version: string;
  node: string;
}

export function versionInfo(): VersionInfo {
  // dist/src/cli/version.js -> the checkout's package.json
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as {
    version: string;
  };
  return { version: pkg.version, node: process.version };
}

export const renderVersion = (v: VersionInfo): string => `flightdeck ${v.version} (Node.js ${v.node})`;
