/** The package's public API for other services: the contracts, the HTTP client, the event consumer. */
export * from './contracts/index.js';
export { type ClientOptions, type JobFilter, RevocationApiError, RevocationClient, type SubmitOptions, type WaitOptions } from './client/revocation-client.js';
export { EventConsumer, type EventConsumerOptions, type EventHandler } from './client/event-consumer.js';
export { type CachedToken, TokenCacheInvalidator } from './client/examples/token-cache-invalidator.js';
