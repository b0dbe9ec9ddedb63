// What the host's small helper processes (the spawner, the tool runner) run first: close every
// descriptor they inherited without close-on-exec, besides stdio and their IPC channel (fd 3).
// Such a descriptor (a pipe a development loader leaves open, one an operator's shell passed
// down) would otherwise reach every process they start: modules, or the system tools.

/** CommonJS source, for the helpers' `node -e` programs (which have `fs` in scope). */
export const CLOSE_INHERITED_FDS = `
for (const name of fs.readdirSync("/proc/self/fd")) {
  const fd = Number(name);
  if (!(fd > 3)) continue;
  try {
    const m = /^flags:\\s*([0-7]+)/m.exec(fs.readFileSync("/proc/self/fdinfo/" + fd, "utf8"));
    if (m && (parseInt(m[1], 8) & 0o2000000) === 0) fs.closeSync(fd);
  } catch {}
}
`;
