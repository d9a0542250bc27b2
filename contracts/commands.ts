import { z } from 'zod';
import { AccessReason, CollectionName, Identifier, MAX_TOKEN_IDS, ObjectId, reasonFields, SubjectKind, Tag, TenantId, TokenId } from './common.js';

/**
 * Who asked, for which tenants, and why. Fixed when the command is accepted; copied into every
 * audit row and event of the command. `tenant_ids: null` means the caller is not tenant-scoped.
 */
export const AuditContext = z.object({
  actor: z.object({ id: z.string(), kind: SubjectKind }),
  tenant_ids: z.array(z.string()).nullable(),
  reason: AccessReason.nullable(),
  adhoc_reason: z.string().nullable(),
  custom_audit: z.string().nullable(),
  request_id: z.string().nullable(),
  source: z.enum(['http', 'cli', 'client', 'system']),
});
export type AuditContext = z.infer<typeof AuditContext>;

const list = <T extends z.ZodType>(item: T) => z.array(item).min(1).max(MAX_TOKEN_IDS);

export const TokensDeleteCommand = z.strictObject({
  type: z.literal('tokens.delete'),
  collection: CollectionName,
  token_ids: list(TokenId).optional(),
  object_ids: list(ObjectId).optional(),
  tags: z.array(Tag).min(1).max(10).optional(),
  tenant_id: TenantId.optional(),
  archived: z.boolean().default(false),
});

export const TokensRotateCommand = z.strictObject({
  type: z.literal('tokens.rotate'),
  collection: CollectionName,
  token_ids: list(TokenId),
});

export const AccessTokenRevokeCommand = z.strictObject({
  type: z.literal('access_token.revoke'),
  token_id: Identifier,
});

export const RevocableSubjectKind = z.enum(['user', 'provider']);

export const TemporaryTokensRevokeAllCommand = z.strictObject({
  type: z.literal('temporary_tokens.revoke_all'),
  subject: z.strictObject({ kind: RevocableSubjectKind, id: Identifier }),
});

/** The subject a lockout or unlock acts on: any kind. */
export const SubjectRef = z.strictObject({ kind: SubjectKind, id: Identifier });
export type SubjectRef = z.infer<typeof SubjectRef>;

export const SubjectLockoutCommand = z.strictObject({
  type: z.literal('subject.lockout'),
  subject: SubjectRef,
});

export const SubjectUnlockCommand = z.strictObject({
  type: z.literal('subject.unlock'),
  subject: SubjectRef,
});

const commandMembers = [TokensDeleteCommand, TokensRotateCommand, AccessTokenRevokeCommand, TemporaryTokensRevokeAllCommand, SubjectLockoutCommand, SubjectUnlockCommand] as const;

/** Every revocation is one of these; `type` is the tag a `switch` is checked against. */
export const Command = z.discriminatedUnion('type', commandMembers).superRefine(requireDeleteCriterion);
export type Command = z.infer<typeof Command>;
export type CommandType = Command['type'];
export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

/** A delete or rotate naming at most this many tokens is short (see isShortCommand). */
export const SHORT_COMMAND_TOKENS = 100;

/**
 * Short: one quick transaction over a few rows — a delete or rotate of at most
 * SHORT_COMMAND_TOKENS named tokens, a revoke or an unlock. The producer says so in the job
 * (CommandJobData.short) and a worker may run it in a transaction shared with other short
 * commands (group commit); a delete by tags or tenant is long (batches of its own).
 */
export function isShortCommand(command: Command): boolean {
  switch (command.type) {
    case 'tokens.delete':
      return !command.tags && command.tenant_id === undefined && (command.token_ids?.length ?? 0) + (command.object_ids?.length ?? 0) <= SHORT_COMMAND_TOKENS;
    case 'tokens.rotate':
      return command.token_ids.length <= SHORT_COMMAND_TOKENS;
    case 'access_token.revoke':
    case 'temporary_tokens.revoke_all':
    case 'subject.unlock':
      return true;
    case 'subject.lockout':
      return false; // revokes every token of the subject, in batches of its own
  }
}
export const commandTypes = commandMembers.map<CommandType>((m) => m.shape.type.value);

/** Commands on vault tokens carry an access reason (SPEC §3, Reasons). */
export const vaultCommandTypes: readonly CommandType[] = ['tokens.delete', 'tokens.rotate'];

function requireDeleteCriterion(command: { type: string; token_ids?: unknown; object_ids?: unknown; tags?: unknown }, ctx: z.RefinementCtx): void {
  if (command.type === 'tokens.delete' && !command.token_ids && !command.object_ids && !command.tags) {
    ctx.addIssue({ code: 'custom', message: 'at least one of token_ids, object_ids or tags is required', path: ['token_ids'] });
  }
}

type WithReasonFields<T extends readonly z.ZodObject[]> = {
  -readonly [K in keyof T]: T[K] extends z.ZodObject<infer Shape, infer Config> ? z.ZodObject<z.core.util.Extend<Shape, typeof reasonFields>, Config> : never;
};

/** Body of `POST /v1/commands`: a command, flat, with its access reason fields. */
export const CommandRequest = z.discriminatedUnion('type', commandMembers.map((member) => member.extend(reasonFields)) as WithReasonFields<typeof commandMembers>).superRefine(requireDeleteCriterion);
export type CommandRequest = z.infer<typeof CommandRequest>;
/** What a client sends: defaults (such as `archived: false`) may be left out. */
export type CommandInput = z.input<typeof CommandRequest>;

/** Query of `POST /v1/commands`: `dry_run=true` previews the command instead of submitting it. */
export const CommandQuery = z.strictObject({
  dry_run: z.enum(['true', 'false'], { message: "must be 'true' or 'false'" }).optional(),
});

/** Most IDs a preview shows (CommandPreview.sample). */
export const PREVIEW_SAMPLE_SIZE = 20;

/**
 * What a command would touch if it ran now (`POST /v1/commands?dry_run=true`): how many tokens
 * or credentials, up to PREVIEW_SAMPLE_SIZE of their IDs (in the order the command takes them),
 * and, for a rotate, the named IDs it would not find (it would then fail with PV3087).
 */
export const CommandPreview = z.object({
  type: z.enum(commandTypes as [CommandType, ...CommandType[]]),
  matches: z.number().int(),
  sample: z.array(z.string()),
  missing: z.array(z.string()).optional(),
});
export type CommandPreview = z.infer<typeof CommandPreview>;

/** Results, one per command type, stored on the job. */
export const TokensDeleteResult = z.object({ deleted: z.number().int() });
export const TokensRotateResult = z.object({ mapping: z.record(z.string(), z.string()) });
export const AccessTokenRevokeResult = z.object({ token_id: z.string() });
export const TemporaryTokensRevokeAllResult = z.object({
  subject: z.object({ kind: RevocableSubjectKind, id: z.string() }),
  generation: z.number().int(),
});

export const SubjectLockoutResult = z.object({ subject: z.object({ kind: SubjectKind, id: z.string() }), revoked: z.number().int() });
export const SubjectUnlockResult = z.object({ subject: z.object({ kind: SubjectKind, id: z.string() }) });

/** The result schema of each command type: a command type without one does not compile. */
export const commandResults = {
  'tokens.delete': TokensDeleteResult,
  'tokens.rotate': TokensRotateResult,
  'access_token.revoke': AccessTokenRevokeResult,
  'temporary_tokens.revoke_all': TemporaryTokensRevokeAllResult,
  'subject.lockout': SubjectLockoutResult,
  'subject.unlock': SubjectUnlockResult,
} as const satisfies Record<CommandType, z.ZodType>;
export type CommandResults = { [T in CommandType]: z.infer<(typeof commandResults)[T]> };
export type CommandResult = CommandResults[CommandType];
