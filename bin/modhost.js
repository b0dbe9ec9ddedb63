#!/usr/bin/env node
// modhost's command line. The sources are TypeScript; tsx compiles them on load.
import { register } from "tsx/esm/api";

register();
await import("../host/cli.ts");
