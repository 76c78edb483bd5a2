// Display helpers: bytes, times, protocols.

const UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

export function bytes(n) {
  let v = Number(n) || 0;
  let u = 0;
  while (v >= 1000 && u < UNITS.length - 1) {
    v /= 1000;
    u += 1;
  }
  return `${v.toFixed(v < 10 && u ? 1 : 0)} ${UNITS[u]}`;
}

const PROTOCOLS = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp" };
export const protocol = (p) => PROTOCOLS[p] ?? String(p);
export const service = (port, proto) => `${port}/${protocol(proto)}`;

export function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}
