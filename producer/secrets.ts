import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Access-token secrets: `rvk_` and 43 characters of base64url (256 random bits). */
export function newSecret(): string {
  return `rvk_${randomBytes(32).toString('base64url')}`;
}

/** What is stored for a secret: its SHA-256. The secret itself is never stored. */
export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Compares two hashes in constant time. */
export function sameHash(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
