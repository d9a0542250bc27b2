import fc from 'fast-check';
import { commandTypes } from '../../contracts/index.js';
import {
  alnum,
  badItemBody,
  badText,
  type Case,
  COLLECTION_NAME,
  type Headers,
  hostileJson,
  hostileText,
  IDENTIFIER,
  isObject,
  items,
  jsonCase,
  missingId,
  notAString,
  pct,
  REASONS,
  tooManyIds,
  tooManyTags,
  unknownParam,
} from '../helpers/hostile/generators.js';
import { admin, COLLECTION, describeHostileRoutes, type FamilySpecs, nobodyAuth, readerAuth, type RouteSpec, VICTIM, type World } from '../helpers/hostile/harness.js';

/**
 * Hostile input to POST /v1/commands (SPEC §4.6, §7), dry runs included: every generated request
 * is a 4xx in the native envelope and changes nothing. The generators and the harness are in
 * test/helpers/hostile/.
 */
/** A spec per route of the plan: its valid requests and its poisons, naming the world's fixtures. */
function specs(w: World): FamilySpecs<'native-commands'> {
  const validCommand: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
    fc.tuple(items(1, 3), fc.constantFrom(...REASONS.filter((r) => r !== 'Other'))).map(([tags, reason]) => ({ type: 'tokens.delete', collection: COLLECTION, tags, reason })),
    fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((reason) => ({ type: 'tokens.delete', collection: COLLECTION, token_ids: w.seededTokenIds, archived: false, reason })),
    fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((reason) => ({ type: 'tokens.rotate', collection: COLLECTION, token_ids: w.seededTokenIds, reason, custom_audit: 'x' })),
    fc.constant({ type: 'access_token.revoke', token_id: w.victim.tokenId }),
    fc.constant({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: VICTIM } }),
    fc.constantFrom('subject.lockout', 'subject.unlock').map((type) => ({ type, subject: { kind: 'user', id: VICTIM } })),
  );
  const vaultCommand = validCommand.filter((c) => c.type === 'tokens.delete' || c.type === 'tokens.rotate');
  const deleteCommand = validCommand.filter((c) => c.type === 'tokens.delete');
  const without = (o: Record<string, unknown>, ...keys: string[]) => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
  const cmd = (body: unknown, poison: string, expectStatus: readonly number[] = [400], headers: Headers = {}) => jsonCase('POST', '/v1/commands', body, headers, poison, expectStatus);
  /** A dry run (SPEC §10) goes through the same validation and authorization: every poison is one with `?dry_run=true` too. */
  const orDryRun = (arb: fc.Arbitrary<Case>): fc.Arbitrary<Case> =>
    fc.tuple(arb, fc.boolean()).map(([c, dry]) => (dry && !c.url.includes('?') ? { ...c, url: `${c.url}?dry_run=true`, poison: `${c.poison} (dry run)` } : c));
  const dryRunPoison: fc.Arbitrary<{ query: string; poison: string }> = fc.oneof(
    hostileText.filter((v) => v !== 'true' && v !== 'false').map((v) => ({ query: `dry_run=${pct(v)}`, poison: `dry_run=${v.slice(0, 20)}` })),
    fc
      .constantFrom('dry_run=true&dry_run=true', 'dry_run=true&dry_run=false', 'dry_run', 'dry_run[]=true', 'dryrun=true', 'DRY_RUN=true', 'dry_run=TRUE', 'dry_run=1')
      .map((query) => ({ query, poison: `query ${query}` })),
    unknownParam(['dry_run']).map((p) => ({ query: p.pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&'), poison: p.poison })),
    fc.tuple(unknownParam(['dry_run']), fc.boolean()).map(([p, before]) => {
      const unknown = p.pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&');
      return { query: before ? `${unknown}&dry_run=true` : `dry_run=true&${unknown}`, poison: `${p.poison} beside dry_run=true` };
    }),
  );
  const commands: RouteSpec = {
    method: 'POST',
    template: '/v1/commands',
    valid: fc.tuple(validCommand, fc.boolean()).map(([body, dry]) => ({ url: dry ? '/v1/commands?dry_run=true' : '/v1/commands', body })),
    json: true,
    commands: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(validCommand, dryRunPoison).map(([c, p]) => jsonCase('POST', `/v1/commands?${p.query}`, c, {}, p.poison, [400]))),
      orDryRun(
        admin(
          fc
            .tuple(
              validCommand,
              fc.oneof(
                hostileText.filter((t) => !(commandTypes as string[]).includes(t)),
                hostileJson.filter((v) => typeof v !== 'string'),
              ),
            )
            .map(([c, type]) => cmd({ ...c, type }, 'bad type')),
        ),
      ),
      orDryRun(admin(validCommand.map((c) => cmd(without(c, 'type'), 'no type')))),
      orDryRun(admin(fc.tuple(validCommand, alnum, hostileJson).map(([c, k, v]) => cmd({ ...c, [`x_${k}`]: v }, 'extra key')))),
      orDryRun(admin(hostileJson.filter((v) => !isObject(v)).map((body) => cmd(body, 'body not an object')))),
      orDryRun(admin(deleteCommand.map((c) => cmd(without(c, 'tags', 'token_ids', 'object_ids'), 'delete without criterion')))),
      orDryRun(
        admin(
          fc
            .tuple(
              vaultCommand,
              fc.oneof(
                fc.constant([] as unknown[]),
                tooManyIds,
                fc.tuple(items(0, 2), badItemBody).map(([ok, bad]) => [...ok, bad]),
                hostileJson.filter((v) => !Array.isArray(v)),
              ),
            )
            .map(([c, token_ids]) => cmd({ ...c, token_ids }, 'bad token_ids')),
        ),
      ),
      orDryRun(
        admin(
          fc
            .tuple(
              deleteCommand,
              fc.oneof(
                tooManyTags,
                fc.constant([] as string[]),
                badItemBody.map((t) => [t]),
              ),
            )
            .map(([c, tags]) => cmd({ ...c, tags }, 'bad tags')),
        ),
      ),
      orDryRun(
        admin(
          fc
            .tuple(
              deleteCommand,
              fc.oneof(
                badItemBody.map((o) => [o]),
                fc.constant([] as string[]),
              ),
            )
            .map(([c, object_ids]) => cmd({ ...c, object_ids }, 'bad object_ids')),
        ),
      ),
      orDryRun(
        admin(
          fc
            .tuple(
              deleteCommand,
              hostileJson.filter((v) => typeof v !== 'boolean'),
            )
            .map(([c, archived]) => cmd({ ...c, archived }, 'archived not a boolean')),
        ),
      ),
      orDryRun(admin(fc.tuple(deleteCommand, notAString(IDENTIFIER)).map(([c, tenant_id]) => cmd({ ...c, tenant_id }, 'bad tenant_id')))),
      orDryRun(admin(fc.tuple(vaultCommand, notAString(COLLECTION_NAME)).map(([c, collection]) => cmd({ ...c, collection }, 'bad collection')))),
      orDryRun(admin(fc.tuple(vaultCommand, alnum).map(([c, a]) => cmd({ ...c, collection: `zzmissing_${a}` }, 'no such collection', [404])))),
      orDryRun(admin(vaultCommand.map((c) => cmd(without(c, 'reason'), 'no reason')))),
      orDryRun(
        admin(
          fc
            .tuple(
              validCommand,
              hostileJson.filter((v) => typeof v !== 'string' || !REASONS.includes(v)).filter((v) => v !== undefined),
            )
            .map(([c, reason]) => cmd({ ...c, reason }, 'unknown reason')),
        ),
      ),
      orDryRun(admin(validCommand.map((c) => cmd({ ...c, reason: 'Other' }, 'Other without adhoc_reason')))),
      orDryRun(
        admin(
          fc
            .tuple(
              validCommand,
              fc.oneof(
                fc.constant(''),
                badText(1000, true),
                hostileJson.filter((v) => typeof v !== 'string' && v !== undefined),
              ),
            )
            .map(([c, adhoc]) => cmd({ ...c, reason: 'Other', adhoc_reason: adhoc }, 'bad adhoc_reason')),
        ),
      ),
      orDryRun(
        admin(
          fc
            .tuple(
              validCommand,
              fc.oneof(
                badText(4000, true),
                hostileJson.filter((v) => typeof v !== 'string' && v !== undefined),
              ),
            )
            .map(([c, custom]) => cmd({ ...c, reason: 'AppFunctionality', custom_audit: custom }, 'bad custom_audit')),
        ),
      ),
      orDryRun(admin(fc.oneof(notAString(IDENTIFIER), fc.constant(undefined)).map((token_id) => cmd({ type: 'access_token.revoke', token_id }, 'bad token_id')))),
      orDryRun(admin(missingId.map((token_id) => cmd({ type: 'access_token.revoke', token_id }, 'no such access token', [404])))),
      orDryRun(
        admin(
          fc
            .oneof(
              hostileJson.filter((v) => !isObject(v)).map((subject) => ({ subject, poison: 'subject not an object' })),
              notAString(/^(user|provider)$/).map((kind) => ({ subject: { kind, id: VICTIM }, poison: 'bad subject kind' })),
              notAString(IDENTIFIER).map((id) => ({ subject: { kind: 'user', id }, poison: 'bad subject id' })),
              fc.tuple(alnum, hostileJson).map(([k, v]) => ({ subject: { kind: 'user', id: VICTIM, [`x_${k}`]: v }, poison: 'extra key in subject' })),
            )
            .map((s) => cmd({ type: 'temporary_tokens.revoke_all', subject: s.subject }, s.poison)),
        ),
      ),
      orDryRun(admin(missingId.map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id } }, 'no such subject', [404])))),
      orDryRun(
        admin(
          fc
            .tuple(
              fc.constantFrom('subject.lockout', 'subject.unlock'),
              fc.oneof(
                hostileJson.filter((v) => !isObject(v)).map((subject) => ({ subject, poison: 'subject not an object' })),
                notAString(/^(user|provider|service)$/).map((kind) => ({ subject: { kind, id: VICTIM }, poison: 'bad subject kind' })),
                notAString(IDENTIFIER).map((id) => ({ subject: { kind: 'user', id }, poison: 'bad subject id' })),
                fc.tuple(alnum, hostileJson).map(([k, v]) => ({ subject: { kind: 'user', id: VICTIM, [`x_${k}`]: v }, poison: 'extra key in subject' })),
              ),
            )
            .map(([type, s]) => cmd({ type, subject: s.subject }, `${type}: ${s.poison}`)),
        ),
      ),
      orDryRun(admin(fc.tuple(fc.constantFrom('subject.lockout', 'subject.unlock'), missingId).map(([type, id]) => cmd({ type, subject: { kind: 'user', id } }, `${type}: no such subject`, [404])))),
      orDryRun(
        admin(
          fc
            .tuple(fc.constantFrom('subject.lockout', 'subject.unlock'), fc.constantFrom('provider', 'service'))
            .map(([type, kind]) => cmd({ type, subject: { kind, id: VICTIM } }, `${type}: a subject of another kind`, [404])),
        ),
      ),
      // a security_admin may lock out a subject of its own domain only: none is missing, the reader holds none
      orDryRun(
        fc
          .tuple(readerAuth(w), fc.constantFrom('subject.lockout', 'subject.unlock'))
          .map(([auth, type]) => cmd({ type, subject: { kind: 'user', id: VICTIM } }, `${type} without security_admin`, [403], auth)),
      ),
      // a provider's temporary tokens are that provider's alone to revoke: the admin is refused before any lookup
      orDryRun(admin(missingId.map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'provider', id } }, "another provider's tokens", [403])))),
      orDryRun(admin(fc.constantFrom('admin', 'hostile-reader').map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id } }, 'a subject that is not a user', [404])))),
      orDryRun(admin(validCommand.map((c) => cmd(c, 'X-Tenant-Id over 200 characters', [400], { 'x-tenant-id': 'x'.repeat(201) })))),
    ],
  };

  return {
    'POST /v1/commands': commands,
  };
}

describeHostileRoutes('native-commands', specs);
