import { createHash } from 'node:crypto';
import type { AuditContext, Command } from '../../contracts/index.js';

/**
 * JSON with keys sorted at every depth (UTF-16 order), undefined members left out: equal
 * commands hash equally. Its output MUST NOT change: stored payload hashes are compared with it
 * on Idempotency-Key replays (test/unit/payload-hash.test.ts holds known hashes).
 */
function canonical(value: unknown): string {
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += `${i > 0 ? ',' : ''}${canonical(value[i]) ?? ''}`;
    return `${out}]`;
  }
  if (value && typeof value === 'object') {
    const object = value as Record<string, unknown>;
    let out = '{';
    for (const key of Object.keys(object).sort()) {
      const member = object[key];
      if (member === undefined) continue;
      out += `${out.length > 1 ? ',' : ''}${JSON.stringify(key)}:${canonical(member)}`;
    }
    return `${out}}`;
  }
  return JSON.stringify(value);
}

/**
 * What makes two submissions "the same command": the command, its scope and its reason, and the
 * route's `identity` when it has one (a Keystone revoke: the subject token it was named by).
 */
export function payloadHash(command: Command, audit: AuditContext, identity?: Record<string, unknown>): string {
  const { tenant_ids, reason, adhoc_reason, custom_audit } = audit;
  return createHash('sha256').update(canonical({ command, tenant_ids, reason, adhoc_reason, custom_audit, identity })).digest('hex');
}
