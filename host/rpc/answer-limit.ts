// The size of one JSON-RPC answer, which the server (host/rpc/server.ts) keeps to and the
// command line's client (host/rpc/client.ts) holds whoever answers it to.

/** `[rpc] max_response_bytes`' default: bytes of JSON in one answer (a batch's together). */
export const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/** What an answer may hold besides the JSON that max_response_bytes counts (its envelope: id, error). */
export const ANSWER_ENVELOPE_BYTES = 64 * 1024;
