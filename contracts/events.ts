import { z } from 'zod';
import { AuditContext, RevocableSubjectKind } from './commands.js';
import { IsoDate, SubjectKind } from './common.js';
import { Canceller, JobError } from './jobs.js';

/** Token IDs per tokens.deleted (and batched access_token.revoked) event (SPEC §8). */
export const MAX_TOKEN_IDS_PER_EVENT = 1000;

const Batch = z.object({ index: z.number().int(), last: z.boolean() });
/** A subject as events name it. */
export const EventSubject = z.object({ id: z.string(), kind: z.string(), domain_id: z.string() });

export const EventData = {
  'tokens.deleted': z.object({ collection: z.string(), token_ids: z.array(z.string()), batch: Batch }),
  'tokens.rotated': z.object({ collection: z.string(), mapping: z.record(z.string(), z.string()), batch: Batch }),
  /**
   * One token (`access_token.revoke`: `token_id`), or a batch of a lockout's (`token_ids`, at
   * most MAX_TOKEN_IDS_PER_EVENT, with `batch`; the last one of the lockout says `last: true`).
   */
  'access_token.revoked': z.union([
    z.object({ token_id: z.string(), subject: EventSubject }),
    z.object({ token_ids: z.array(z.string()).max(MAX_TOKEN_IDS_PER_EVENT), subject: EventSubject, batch: Batch }),
  ]),
  'temporary_tokens.revoked': z.object({
    subject: z.object({ kind: RevocableSubjectKind, id: z.string() }),
    generation: z.number().int(),
  }),
  /** The subject is disabled from this event's commit on; its tokens follow as access_token.revoked batches. */
  'subject.locked': z.object({ subject: EventSubject.extend({ kind: SubjectKind }), disabled_at: IsoDate }),
  'subject.unlocked': z.object({ subject: EventSubject.extend({ kind: SubjectKind }) }),
  'command.succeeded': z.object({ command_type: z.string(), result: z.record(z.string(), z.unknown()) }),
  'command.failed': z.object({ command_type: z.string(), error: JobError }),
  /** `result`: what the command had done when it stopped (a delete: `{ deleted: N }`), else null. */
  'command.cancelled': z.object({
    command_type: z.string(),
    result: z.record(z.string(), z.unknown()).nullable(),
    cancelled_by: Canceller,
  }),
} as const;

export type EventType = keyof typeof EventData;
export const eventTypes = Object.keys(EventData) as EventType[];

/** A command's last event: exactly one of these per command. */
export const terminalEventTypes = ['command.succeeded', 'command.failed', 'command.cancelled'] as const satisfies readonly EventType[];

const envelope = <T extends EventType>(type: T) =>
  z.object({
    event_id: z.uuid(),
    schema_version: z.literal(1),
    type: z.literal(type),
    occurred_at: IsoDate,
    job_id: z.uuid(),
    tenant_ids: z.array(z.string()).nullable(),
    audit: AuditContext.omit({ tenant_ids: true }),
    data: EventData[type],
  });

/** The schema of each event type's envelope, as a union (one member per type). */
type Envelope = { [T in EventType]: ReturnType<typeof envelope<T>> }[EventType];

/** The JSON held by the `event` field of each stream entry: one envelope per type of EventData. */
export const RevocationEvent = z.discriminatedUnion('type', eventTypes.map((type) => envelope(type)) as [Envelope, ...Envelope[]]);
export type RevocationEvent = z.infer<typeof RevocationEvent>;
export type EventOf<T extends EventType> = Extract<RevocationEvent, { type: T }>;

/** What a handler asks to publish; the outbox adds the envelope. */
export type EventDraft = { [T in EventType]: { type: T; data: z.infer<(typeof EventData)[T]> } }[EventType];
