import { STATUS_CODES } from 'node:http';
import { expect } from 'vitest';
import { errorRegistry } from '../../contracts/index.js';

/**
 * The error envelopes of the route families (SPEC §7): Piiano's `{error_code, message, context}`,
 * which the native routes answer in too, Keystone's `{error: {code, title, message}}` and
 * Onezone's `{error: {id, details, description}}`. The builders give a body for `toEqual` (a
 * message or description is any non-blank text unless given); `envelopeProblem` checks an answer
 * to the letter, headers included, as the property tests need.
 */

export type Family = 'piiano' | 'native' | 'keystone' | 'onezone';

/** The family of a URL, by the SPEC's route groups (not by the app's own helper). */
export function familyOf(url: string): Family {
  if (url.startsWith('/api/pvlt/')) return 'piiano';
  if (url.startsWith('/v3/auth/')) return 'keystone';
  if (url.startsWith('/api/v3/onezone/')) return 'onezone';
  return 'native';
}

const text = () => expect.stringMatching(/\S/);

/** Piiano's error body (the native routes' too): `code`, its context (any object unless given) and message. */
export function piianoError(code: string, context: unknown = expect.any(Object), message: unknown = text()) {
  return { error_code: code, message, context };
}

/** Keystone's error body: the status as its code, the status's reason phrase as its title. */
export function keystoneError(status: number, message: unknown = text()) {
  return { error: { code: status, title: STATUS_CODES[status], message } };
}

/** Onezone's error body: Onedata's error `id` (any unless given), and `details` holding our error_code beside Onedata's own. */
export function onezoneError(id: unknown = expect.any(String), code?: string, details: Record<string, unknown> = {}, description: unknown = text()) {
  return { error: { id, details: expect.objectContaining({ ...details, ...(code !== undefined && { error_code: code }) }), description } };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const sameKeys = (o: Record<string, unknown>, keys: string[]) => Object.keys(o).sort().join(',') === [...keys].sort().join(',');
const registered = (code: unknown): code is keyof typeof errorRegistry => typeof code === 'string' && code in errorRegistry;

/**
 * Why an answer is not a `status` error in the family's envelope, to the letter: JSON, exactly
 * the envelope's keys, a registered code whose status is the answer's, non-blank texts, a
 * context of strings only (Piiano's schema types every context value as one). Undefined when it is.
 */
export function envelopeProblem(family: Family, status: number, contentType: string | undefined, text: string): string | undefined {
  if (!/^application\/json\b/.test(contentType ?? '')) return `content-type is ${contentType ?? 'missing'}, not application/json`;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return 'the body is not JSON';
  }
  if (!isObject(body)) return 'the body is not an object';
  if (family === 'piiano' || family === 'native') {
    if (!sameKeys(body, ['error_code', 'message', 'context'])) return 'not {error_code, message, context}';
    if (!registered(body.error_code)) return `error_code ${String(body.error_code)} is not in the registry`;
    if (errorRegistry[body.error_code].status !== status) return `${body.error_code} is registered as ${errorRegistry[body.error_code].status}, answered ${status}`;
    if (typeof body.message !== 'string' || body.message === '') return 'message is not a non-empty string';
    if (!isObject(body.context)) return 'context is not an object';
    const notText = Object.entries(body.context).find(([, value]) => typeof value !== 'string');
    if (notText) return `context.${notText[0]} is not a string (Piiano's schema types every context value as one)`;
    return undefined;
  }
  const error = body.error;
  if (!sameKeys(body, ['error']) || !isObject(error)) return 'not {error: {…}}';
  if (family === 'keystone') {
    if (!sameKeys(error, ['code', 'title', 'message'])) return 'not {error: {code, title, message}}';
    if (error.code !== status) return `error.code ${String(error.code)} is not the status ${status}`;
    if (error.title !== STATUS_CODES[status]) return `error.title ${String(error.title)} is not ${STATUS_CODES[status]}`;
    if (typeof error.message !== 'string' || error.message === '') return 'error.message is not a non-empty string';
    return undefined;
  }
  if (!sameKeys(error, ['id', 'details', 'description'])) return 'not {error: {id, details, description}}';
  if (typeof error.id !== 'string' || !/^[a-z][A-Za-z]*$/.test(error.id)) return `error.id ${String(error.id)} is not a camelCase id`;
  if (!isObject(error.details) || !registered(error.details.error_code)) return 'error.details.error_code is not in the registry';
  if (errorRegistry[error.details.error_code].status !== status) return `${error.details.error_code} is registered as ${errorRegistry[error.details.error_code].status}, answered ${status}`;
  if (typeof error.description !== 'string' || error.description === '') return 'error.description is not a non-empty string';
  return undefined;
}
