// Event subscriptions. Delivery itself is the host session's job (windowed, sequenced,
// overflow counted); these methods only change what the calling module is subscribed to.
// With a scoped grant (subscribe_events=NewBlock,ChainReorg) only those types are allowed.
import * as v from "valibot";
import { method, type Family } from "./types.ts";
import { CapabilityError, type CallContext } from "./types.ts";
import { closest } from "./catalogue.ts";
import { ownBytesIn } from "../protocol/codec.ts";
import { HOST_EVENT_NAMES, isHostEvent, MODULE_EVENT, ROLE_EVENT_SCHEMAS, roleOf, type ProviderRole, type RoleEventName } from "./event-types.ts";

const types = v.pipe(v.array(v.string()), v.minLength(1, "name at least one event type"), v.maxLength(256));

function checkTypes(list: string[]): string[] {
  for (const t of list) {
    if (!isHostEvent(t) && !MODULE_EVENT.test(t)) {
      const guess = closest(t, HOST_EVENT_NAMES);
      throw new CapabilityError("invalid_params", `unknown event type "${t}"${guess ? `; did you mean "${guess}"?` : ""} (module events are named "module:event")`);
    }
  }
  return list;
}

/** Largest payload of a published module event (estimated encoded size). */
const MAX_EVENT_PAYLOAD_BYTES = 64 * 1024;
/** Events one module may publish per second (bursts of twice as many). */
export const PUBLISH_RATE = 1000;
const EVENT_LOCAL_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

/**
 * The bus type of an event `module` publishes: always in its own namespace. The module names
 * only the part after the colon, so it can neither forge a node event nor another module's;
 * names that are node event names are refused too, so that "m:NewBlock" cannot be mistaken
 * for the real thing.
 */
function ownEventType(module: string, name: string): string {
  if (name.includes(":")) {
    throw new CapabilityError("invalid_params", `event name "${name}" contains ":"; name only the part after the colon: a module publishes only in its own namespace, as "${module}:<name>"`);
  }
  if (!EVENT_LOCAL_NAME.test(name)) {
    throw new CapabilityError("invalid_params", `event name "${name}" is not valid: a letter first, then letters, digits, '_', '.' or '-', at most 64 characters`);
  }
  if (isHostEvent(name)) {
    throw new CapabilityError("invalid_params", `"${name}" is a node event; modules cannot publish node events. Choose another name (it would be published as "${module}:<name>")`);
  }
  const type = `${module}:${name}`;
  if (!MODULE_EVENT.test(type)) throw new CapabilityError("invalid_params", `"${type}" is not a valid module event type`);
  return type;
}

/**
 * A provider role's event (PaymentSettled, BlockTemplateUpdated, GovernanceProposalCreated,
 * ...), published as the real type: only by the module the operator designated for the role,
 * and only with a payload that matches the event's schema.
 */
async function publishRoleEvent(c: CallContext, role: ProviderRole, name: RoleEventName, payload: unknown): Promise<string> {
  const designated = c.services.providers?.designated(role);
  if (designated !== c.module) {
    throw new CapabilityError(
      "permission_denied",
      designated === undefined
        ? `"${name}" is a ${role} event: only the module the operator designates as the ${role} provider may publish it ([modules.providers] ${role} = "NAME"); no module is designated`
        : `"${name}" is a ${role} event: only "${designated}", the designated ${role} provider, may publish it`,
      { denial: true },
    );
  }
  const parsed = v.safeParse(ROLE_EVENT_SCHEMAS[name], payload ?? null);
  if (!parsed.success) {
    throw new CapabilityError("invalid_params", `payload of ${name}: ${parsed.issues.map((i) => `${v.getDotPath(i) ?? "(payload)"}: ${i.message}`).join("; ")}`);
  }
  if (!c.services.publish(name, parsed.output, c.module)) {
    throw new CapabilityError("quota_exceeded", `${c.module} is publishing faster than ${PUBLISH_RATE} events per second; slow down or batch payloads`);
  }
  return name;
}

/**
 * Payloads are plain data (as decoded from the wire), at most MAX_EVENT_PAYLOAD_BYTES and 32
 * levels deep. Returns the estimated encoded size (what each subscriber's queue counts).
 */
function checkPayload(payload: unknown): number {
  let size = 0;
  const walk = (value: unknown, depth: number): void => {
    if (depth > 32) throw new CapabilityError("invalid_params", "event payload is nested more than 32 levels deep");
    if (value === null || typeof value === "boolean") size += 1;
    else if (typeof value === "number") size += 9;
    else if (typeof value === "string") size += 5 + Buffer.byteLength(value);
    else if (value instanceof Uint8Array) size += 5 + value.byteLength;
    else if (Array.isArray(value)) {
      size += 5;
      for (const item of value) walk(item, depth + 1);
    } else if (typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
      size += 5;
      for (const [k, item] of Object.entries(value)) {
        size += 5 + Buffer.byteLength(k);
        walk(item, depth + 1);
      }
    } else {
      throw new CapabilityError("invalid_params", "event payload must be plain data (null, booleans, numbers, strings, bytes, arrays, maps)");
    }
    if (size > MAX_EVENT_PAYLOAD_BYTES) throw new CapabilityError("invalid_params", `event payload is larger than ${MAX_EVENT_PAYLOAD_BYTES} bytes`);
  };
  walk(payload, 0);
  return size;
}

export const events: Family = {
  name: "events",
  summary: "Subscribe to node and module events.",
  methods: [
    method({
      name: "subscribe_events", result: v.array(v.string()), callback: "event", handWritten: { rust: "the event types as &[&str]; events arrive through Client::events, not a callback" }, js: "subscribe", permission: "subscribe_events", args: ["types"], params: v.object({ types }),
      summary: "Add event types to the subscription; returns the full list.",
      targets: (p) => checkTypes(p.types),
      handler: async (c, p) => c.events.subscribe(checkTypes(p.types)),
    }),
    method({
      name: "publish_event", result: v.string(), js: "publish", permission: "publish_events", args: ["name", "payload"],
      params: v.object({ name: v.string(), payload: v.optional(v.unknown()) }),
      summary: `Publish an event in this module's namespace, as "module-name:name" (payload: plain data, at most ${MAX_EVENT_PAYLOAD_BYTES} bytes); returns the full event type. A provider role's event (PaymentSettled, BlockTemplateUpdated, ...) is published as the real type, only by the module the operator designated for the role, with a payload checked against its schema.`,
      handler: async (c, p) => {
        // Queued for subscribers beyond this request: its bytes must not keep the frame alive.
        const payload = ownBytesIn(p.payload ?? null);
        const role = roleOf(p.name);
        if (role !== undefined) return publishRoleEvent(c, role, p.name as RoleEventName, payload);
        const type = ownEventType(c.module, p.name);
        const bytes = checkPayload(payload);
        if (!c.services.publish(type, payload, c.module, bytes)) {
          throw new CapabilityError("quota_exceeded", `${c.module} is publishing faster than ${PUBLISH_RATE} events per second; slow down or batch payloads`);
        }
        return type;
      },
    }),
    method({
      name: "unsubscribe_events", result: v.array(v.string()), js: "unsubscribe", permission: "subscribe_events", args: ["types"], params: v.object({ types }),
      summary: "Remove event types from the subscription; returns the remaining list.",
      handler: async (c, p) => c.events.unsubscribe(p.types),
    }),
  ],
};
