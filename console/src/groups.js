// Which map group an asset belongs to, named as the API names its groups (flowlens_dagster/api/queries.py
// GROUP_EXPR): a subnet "10.1.2.0/24" or "2001:db8::/64", "AS64512" or "unknown", an owner or an
// environment, "(none)" when the inventory gives none.

function v4Bytes(addr) {
  const parts = addr.split(".").map(Number);
  return parts.length === 4 && parts.every((p) => Number.isInteger(p) && p >= 0 && p <= 255) ? parts : null;
}

function v6Words(addr) {
  let text = addr.toLowerCase();
  const tail = text.match(/(\d+\.\d+\.\d+\.\d+)$/); // ::ffff:10.0.0.1 style endings
  if (tail) {
    const b = v4Bytes(tail[1]);
    if (!b) return null;
    text = text.slice(0, -tail[1].length) + `${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head, rest] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = rest ? rest.split(":") : [];
  const fill = text.includes("::") ? 8 - left.length - right.length : 0;
  const words = [...left, ...Array(fill).fill("0"), ...right].map((w) => Number.parseInt(w, 16));
  return words.length === 8 && words.every((w) => w >= 0 && w <= 0xffff) ? words : null;
}

// RFC 5952 text, as PostgreSQL prints it: the longest run of two or more zero words becomes "::".
function v6Text(words) {
  let best = [-1, 0];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && words[j] === 0) j += 1;
    if (j - i > best[1] && j - i >= 2) best = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best[0] < 0) return hex.join(":");
  return `${hex.slice(0, best[0]).join(":")}::${hex.slice(best[0] + best[1]).join(":")}`;
}

function maskWords(words, bits) {
  return words.map((w, i) => {
    const keep = Math.max(0, Math.min(16, bits - 16 * i));
    return keep === 0 ? 0 : w & (0xffff << (16 - keep)) & 0xffff;
  });
}

export function subnetOf(addr, v4Len, v6Len) {
  const b = v4Bytes(addr);
  if (b) {
    const n = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
    const masked = v4Len === 0 ? 0 : (n & (~0 << (32 - v4Len))) >>> 0;
    return `${[24, 16, 8, 0].map((s) => (masked >>> s) & 255).join(".")}/${v4Len}`;
  }
  const words = v6Words(addr);
  return words ? `${v6Text(maskWords(words, v6Len))}/${v6Len}` : null;
}

// The prefix lengths the API grouped by, read from the group names it sent.
export function prefixLengths(groupKeys) {
  const lengths = { v4: 24, v6: 64 };
  for (const key of groupKeys) {
    const [net, len] = String(key).split("/");
    if (len === undefined) continue;
    if (net.includes(":")) lengths.v6 = Number(len);
    else lengths.v4 = Number(len);
  }
  return lengths;
}

// node: an asset row of the API (addr, owner, environment, asn, ...).
export function groupOf(grouping, node, lengths) {
  switch (grouping) {
    case "subnet": return subnetOf(node.addr, lengths.v4, lengths.v6);
    case "asn": return node.asn ? `AS${node.asn}` : "unknown";
    case "owner": return node.owner ?? "(none)";
    case "environment": return node.environment ?? "(none)";
    default: return null;
  }
}
