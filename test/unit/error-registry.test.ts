import { describe, expect, it } from 'vitest';
import { AppError, type ErrorCode, errorCodes, errorRegistry } from '../../contracts/index.js';
import { familyOfUrl, renderers } from '../../producer/plugins/error-envelopes.js';

describe('the error registry', () => {
  it('gives every code a 4xx or 5xx status, a name and a message', () => {
    expect(errorCodes.length).toBeGreaterThan(0);
    for (const code of errorCodes) {
      const entry = errorRegistry[code];
      expect(code).toMatch(/^PV\d{4}$/);
      expect(entry.status, code).toBeGreaterThanOrEqual(400);
      expect(entry.status, code).toBeLessThan(600);
      expect(entry.name, code).toMatch(/^[a-z][a-z_]*$/);
      expect(entry.message.trim().length, code).toBeGreaterThan(0);
    }
  });

  it('gives every code a name of its own', () => {
    const names = errorCodes.map((c) => errorRegistry[c].name);
    expect(new Set(names).size).toBe(names.length);
  });

  it.each([
    ['PV1000', 500],
    ['PV1001', 400],
    ['PV1005', 401],
    ['PV1007', 403],
    ['PV1009', 503],
    ['PV3009', 404],
    ['PV3087', 404],
    ['PV3218', 409],
  ] as [ErrorCode, number][])('keeps the seed meaning of %s (status %i)', (code, status) => {
    expect(errorRegistry[code].status).toBe(status);
  });

  it('names the seed codes after what they mean', () => {
    expect(errorRegistry.PV1001.message).toMatch(/reason/i);
    expect(errorRegistry.PV1005.message).toMatch(/unauthori[sz]ed/i);
    expect(errorRegistry.PV1007.message).toMatch(/capabilit/i);
    expect(errorRegistry.PV1009.message).toMatch(/timed out/i);
    expect(errorRegistry.PV3009.message).toMatch(/not found/i);
    expect(errorRegistry.PV3087.message).toMatch(/not found/i);
    expect(errorRegistry.PV3218.message).toMatch(/concurrent/i);
  });

  it('gives an AppError the status and default message of its code', () => {
    const error = new AppError('PV3087', { token_ids: 'a,b' });
    expect(error.status).toBe(404);
    expect(error.message).toBe(errorRegistry.PV3087.message);
    expect(error.toJSON()).toEqual({ error_code: 'PV3087', message: errorRegistry.PV3087.message, context: { token_ids: 'a,b' } });
  });
});

describe('the error envelopes', () => {
  const sample = { code: 'PV3009' as const, message: 'The token is not found.', context: { collection: 'cards' } };

  it('renders Piiano and native errors as { error_code, message, context }', () => {
    const expected = { error_code: 'PV3009', message: 'The token is not found.', context: { collection: 'cards' } };
    expect(renderers.piiano(sample)).toEqual(expected);
    expect(renderers.native(sample)).toEqual(expected);
  });

  it('renders every Piiano and native context value as a string, as the seed schema types them', () => {
    const context = { token_ids: ['a', 'b'], limit: 3, archived: true, reason: null, nested: { k: 1 }, collection: 'cards' };
    const expected = { token_ids: 'a,b', limit: '3', archived: 'true', reason: '', nested: '{"k":1}', collection: 'cards' };
    expect(renderers.piiano({ code: 'PV1002', message: 'bad', context })).toEqual({ error_code: 'PV1002', message: 'bad', context: expected });
    expect(renderers.native({ code: 'PV1002', message: 'bad', context })).toEqual({ error_code: 'PV1002', message: 'bad', context: expected });
    // a failed job stores its error the same way
    expect(new AppError('PV1002', context, 'bad').toJSON()).toEqual({ error_code: 'PV1002', message: 'bad', context: expected });
  });

  it('renders Keystone errors as { error: { code, title, message } } with the HTTP status and its title', () => {
    expect(renderers.keystone(sample)).toEqual({ error: { code: 404, title: 'Not Found', message: 'The token is not found.' } });
    expect(renderers.keystone({ code: 'PV1005', message: 'no', context: {} })).toEqual({ error: { code: 401, title: 'Unauthorized', message: 'no' } });
  });

  it("renders Onezone errors as { error: { id, details, description } } with Onedata's id, keeping the code and context in details", () => {
    const rendered = renderers.onezone(sample) as { error: { id: string; details: Record<string, unknown>; description: string } };
    expect(Object.keys(rendered)).toEqual(['error']);
    expect(Object.keys(rendered.error).sort()).toEqual(['description', 'details', 'id']);
    expect(rendered.error.id).toBe('notFound');
    expect(rendered.error.description).toBe('The token is not found.');
    expect(rendered.error.details).toMatchObject({ error_code: 'PV3009', collection: 'cards' });
  });

  // the ids and details of Onedata's ctool (src/errors.erl, to_json/1)
  it.each([
    ['PV1000', {}, 'internalServerError', {}],
    ['PV1001', {}, 'missingRequiredValue', { key: 'reason' }],
    ['PV1002', { params: ['id: may contain only letters, digits and . _ : @ -'] }, 'badValueIdentifier', { key: 'id' }],
    ['PV1002', { header: 'X-Tenant-Id' }, 'badValueIdentifier', { key: 'X-Tenant-Id' }],
    ['PV1002', { header: 'Idempotency-Key' }, 'badValueString', { key: 'Idempotency-Key' }],
    ['PV1002', { body: ['temporary: Invalid input: expected boolean'] }, 'badData', { key: 'temporary' }],
    ['PV1002', {}, 'malformedData', {}],
    ['PV1005', {}, 'unauthorized', {}],
    ['PV1006', { tenant_ids: 't' }, 'forbidden', {}],
    ['PV1007', { capability: 'tokens:manage' }, 'forbidden', {}],
    ['PV1008', {}, 'notFound', {}],
    ['PV1009', { job_id: 'j' }, 'timeout', {}],
    ['PV1010', {}, 'temporaryFailure', {}],
    ['PV1011', { limit: 3, window_seconds: 60 }, 'limitReached', { limit: 3, resourceDescription: 'requests per 60 seconds' }],
    ['PV1013', {}, 'notSupported', {}],
    ['PV3003', { subject_id: 's' }, 'notFound', {}],
    ['PV3004', {}, 'alreadyExists', {}],
    ['PV3010', {}, 'badValueIdentifierOccupied', { key: 'Idempotency-Key' }],
  ] as [ErrorCode, Record<string, unknown>, string, Record<string, unknown>][])('renders %s %j for Onezone as Onedata %s', (code, context, id, details) => {
    const rendered = renderers.onezone({ code, message: 'm', context }) as { error: { id: string; details: Record<string, unknown> } };
    expect(rendered.error.id).toBe(id);
    expect(rendered.error.details).toEqual({ ...context, ...details, error_code: code });
  });

  it('renders every registry code in every envelope', () => {
    for (const code of errorCodes) {
      const e = { code, message: errorRegistry[code].message, context: {} };
      expect(renderers.piiano(e)).toMatchObject({ error_code: code });
      expect(renderers.keystone(e)).toMatchObject({ error: { code: errorRegistry[code].status, title: expect.any(String) } });
      expect(renderers.onezone(e)).toMatchObject({ error: { id: expect.stringMatching(/^[a-z][A-Za-z]*$/), description: e.message } });
    }
  });

  it('picks the family of an unmatched URL from its prefix', () => {
    expect(familyOfUrl('/api/pvlt/1.0/data/collections/x/nope')).toBe('piiano');
    expect(familyOfUrl('/v3/auth/nope')).toBe('keystone');
    expect(familyOfUrl('/api/v3/onezone/nope')).toBe('onezone');
    expect(familyOfUrl('/v1/nope')).toBe('native');
  });
});
