/**
 * OVF signatures (.cert): "ALGO(manifest.mf)= hex-signature" followed by the signer's PEM
 * certificate. We check that the signature over the manifest verifies with the embedded
 * certificate's key and report who signed it; trusting that signer is the operator's call.
 */
import { X509Certificate, verify } from 'node:crypto';
import { FdError } from '../core/errors.js';

export interface CertCheck {
  /** Subject and issuer of the embedded certificate. */
  subject: string;
  issuer: string;
  validTo: string;
  selfSigned: boolean;
  manifest: string;
  algorithm: string;
}

export function verifyManifestSignature(
  certText: string,
  manifestName: string,
  manifest: Buffer,
  source = 'certificate',
): CertCheck {
  const m = /^\s*(SHA1|SHA256|SHA512)\s*\((.+?)\)\s*=\s*([0-9a-fA-F]+)\s*$/im.exec(certText);
  if (!m) {
    throw new FdError('FD_OVF_BAD_CERT', `${source} has no "ALGO(file.mf)= signature" line`, {
      hint: 'the .cert file is damaged; remove it to import unsigned',
    });
  }
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certText);
  if (!pem) throw new FdError('FD_OVF_BAD_CERT', `${source} holds no PEM certificate`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem[0]);
  } catch (err) {
    throw new FdError('FD_OVF_BAD_CERT', `${source}: the certificate does not parse`, { cause: err });
  }
  const signed = m[2]!.trim();
  if (signed !== manifestName) {
    throw new FdError('FD_OVF_BAD_CERT', `${source} signs "${signed}", but the manifest is "${manifestName}"`);
  }
  const algorithm = m[1]!.toLowerCase();
  const ok = verify(algorithm, manifest, cert.publicKey, Buffer.from(m[3]!, 'hex'));
  if (!ok) {
    throw new FdError(
      'FD_OVF_SIGNATURE_INVALID',
      `${source}: the signature over ${manifestName} does not verify with the embedded certificate (${cert.subject.replace(/\n/g, ', ')})`,
      {
        hint: 'the manifest or the signature was changed after signing; do not import this appliance',
      },
    );
  }
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
    validTo: cert.validTo,
    selfSigned: cert.subject === cert.issuer,
    manifest: manifestName,
    algorithm,
  };
}
