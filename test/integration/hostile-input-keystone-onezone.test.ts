import fc from 'fast-check';
import { type Headers, idSegmentPoison, missingId, subjectTokenPoison } from '../helpers/hostile/generators.js';
import { admin, describeHostileRoutes, type FamilySpecs, readerAuth, type RouteSpec, VICTIM, type World } from '../helpers/hostile/harness.js';
import { ADMIN_TOKEN } from '../helpers/stack.js';

/**
 * Hostile input to the Keystone token routes and the Onezone temporary-token routes (SPEC §4.6,
 * §7): every generated request is a 4xx in its family's envelope (Keystone's, Onezone's) and
 * changes nothing. One file for both: each is a handful of routes, small beside a file's own
 * start-up. The generators and the harness are in test/helpers/hostile/.
 */

/** A spec per route of the plan: its valid requests and its poisons, naming the world's fixtures. */
function specs(w: World): FamilySpecs<'keystone-onezone'> {
  const keystone: RouteSpec = {
    method: 'DELETE',
    template: '/v3/auth/tokens',
    valid: fc.constant({ url: '/v3/auth/tokens', headers: { 'x-subject-token': w.victim.token } }),
    commands: true,
    forbidden: readerAuth(w),
    poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'DELETE', url: '/v3/auth/tokens', headers: p.headers, poison: p.poison, expect: p.expect })))],
  };
  const keystoneValidate: RouteSpec = {
    method: 'GET',
    template: '/v3/auth/tokens',
    valid: fc.constant({ url: '/v3/auth/tokens', headers: { 'x-subject-token': w.victim.token } }),
    forbidden: readerAuth(w),
    poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'GET', url: '/v3/auth/tokens', headers: p.headers, poison: p.poison, expect: p.expect })))],
  };

  const userPath = (segment: string) => `/api/v3/onezone/users/${segment}/tokens/temporary`;
  const userPoisons = (method: string) => [
    admin(idSegmentPoison.map((p) => ({ method, url: userPath(p.segment), poison: p.poison, expect: [400, 404] }))),
    admin(missingId.map((id) => ({ method, url: userPath(id), poison: 'no such user', expect: [404] }))),
    admin(fc.constantFrom('admin', 'hostile-reader', 'hostile-provider').map((id) => ({ method, url: userPath(id), poison: 'a subject that is not a user', expect: [404] }))),
  ];
  const userDelete: RouteSpec = {
    method: 'DELETE',
    template: '/api/v3/onezone/users/:id/tokens/temporary',
    valid: fc.constant({ url: userPath(VICTIM) }),
    commands: true,
    forbidden: readerAuth(w),
    poisons: userPoisons('DELETE'),
  };
  const userGet: RouteSpec = {
    method: 'GET',
    template: '/api/v3/onezone/users/:id/tokens/temporary',
    valid: fc.constant({ url: userPath(VICTIM) }),
    forbidden: readerAuth(w),
    poisons: userPoisons('GET'),
  };
  // The provider routes act on the calling provider: any other caller is the poison.
  const notProvider = () =>
    fc.constantFrom<Headers>(
      { authorization: `Bearer ${ADMIN_TOKEN}` },
      { 'x-auth-token': w.reader.token },
      { authorization: `Bearer ${w.victim.token}` },
      { authorization: `Bearer ${w.nobody.token}` },
    );
  const providerPath = '/api/v3/onezone/provider/tokens/temporary';
  const providerDelete: RouteSpec = { method: 'DELETE', template: providerPath, valid: fc.constant({ url: providerPath }), forbidden: notProvider(), poisons: [] };
  const providerGet: RouteSpec = { method: 'GET', template: providerPath, valid: fc.constant({ url: providerPath }), forbidden: notProvider(), poisons: [] };

  return {
    'DELETE /v3/auth/tokens': keystone,
    'GET /v3/auth/tokens': keystoneValidate,
    'DELETE /api/v3/onezone/users/:id/tokens/temporary': userDelete,
    'GET /api/v3/onezone/users/:id/tokens/temporary': userGet,
    'DELETE /api/v3/onezone/provider/tokens/temporary': providerDelete,
    'GET /api/v3/onezone/provider/tokens/temporary': providerGet,
  };
}

describeHostileRoutes('keystone-onezone', specs);
