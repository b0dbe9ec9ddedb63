// Event subscriptions. Delivery itself is the host session's job (windowed, sequenced,
// overflow counted); these methods only change what the calling module is subscribed to.
// With a scoped grant (subscribe_events=NewBlock,ChainReorg) only those types are allowed.
import * as v from "valibot";
import { method, type Family } from "./types.ts";
import { CapabilityError } from "./types.ts";
import { closest } from "./catalogue.ts";
import { HOST_EVENT_NAMES, isHostEvent, MODULE_EVENT } from "../host/events/types.ts";

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

export const events: Family = {
  name: "events",
  summary: "Subscribe to node and module events.",
  methods: [
    method({
      name: "subscribe_events", js: "subscribe", permission: "subscribe_events", args: ["types"], params: v.object({ types }),
      summary: "Add event types to the subscription; returns the full list.",
      targets: (p) => checkTypes(p.types),
      handler: async (c, p) => c.events.subscribe(checkTypes(p.types)),
    }),
    method({
      name: "unsubscribe_events", js: "unsubscribe", permission: "subscribe_events", args: ["types"], params: v.object({ types }),
      summary: "Remove event types from the subscription; returns the remaining list.",
      handler: async (c, p) => c.events.unsubscribe(p.types),
    }),
  ],
};
