// Errors the host and the harness throw carry no property whose value is undefined: a test that
// fails with one is reported (the TAP reporter serialises the error as YAML, which refuses
// undefined and crashed the whole run, hiding every later result).
import test from "ava";
import { ModhostError } from "../host/errors.ts";
import { RpcError as HostRpcError } from "../host/rpc/server.ts";
import { RpcError as HarnessRpcError } from "../testing/index.ts";
import { MessageError } from "../protocol/messages.ts";
import { CodecError, EncodeError } from "../protocol/codec.ts";

const undefinedProps = (e: object): string[] => Object.getOwnPropertyNames(e).filter((k) => (e as Record<string, unknown>)[k] === undefined);

test("errors thrown without their optional details have no undefined properties; with them, they keep them", (t) => {
  const bare = [new ModhostError("load_failed", "m"), new HostRpcError(-32000, "m"), new HarnessRpcError(-32000, "m"), new MessageError("m", 1), new CodecError("m"), new EncodeError("not_plain_data", "m")];
  for (const e of bare) t.deepEqual(undefinedProps(e), [], e.name);
  t.is(new ModhostError("c", "m", "do this").hint, "do this");
  t.deepEqual(new HarnessRpcError(1, "m", { a: 1 }).data, { a: 1 });
  t.is(new HostRpcError(1, "m", 0).data, 0);
  t.is(new MessageError("m", 1, "request").kind, "request");
  t.is(new CodecError("m", "max_depth").limit, "max_depth");
  t.is(new EncodeError("result_too_large", "m", "max_frame").limit, "max_frame");
});
