// Keyboard navigation shared by every list (search results, groups, feed, impact, dependencies):
// arrows, PageUp/PageDown (ten items) and Home/End move the selection, Enter opens the selected
// item, a click does the same.

const PAGE = 10;

export function fillList(list, items, render, onPick) {
  list.replaceChildren();
  list._items = items;
  list._onPick = onPick;
  list._selected = -1;
  const frag = document.createDocumentFragment();
  items.forEach((item, i) => {
    const li = document.createElement("li");
    li.setAttribute("role", "option");
    li.id = `${list.id}-${i}`;
    li.dataset.index = String(i);
    li.append(...render(item));
    frag.append(li);
  });
  list.append(frag);
  if (!list._wired) wire(list);
}

function wire(list) {
  list._wired = true;
  list.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-index]");
    if (!li) return;
    select(list, Number(li.dataset.index));
    pick(list);
  });
  list.addEventListener("keydown", (ev) => {
    if (handleKey(list, ev.key)) ev.preventDefault();
  });
}

// Returns true when the key was used (so the caller stops the browser's default).
export function handleKey(list, key) {
  const n = list._items?.length ?? 0;
  if (!n) return false;
  const moves = { ArrowDown: list._selected + 1, ArrowUp: list._selected - 1, Home: 0, End: n - 1,
    PageDown: list._selected + PAGE, PageUp: list._selected - PAGE };
  if (key in moves) {
    select(list, Math.max(0, Math.min(n - 1, moves[key])));
    return true;
  }
  if (key === "Enter" && list._selected >= 0) {
    pick(list);
    return true;
  }
  return false;
}

function select(list, index) {
  list.querySelector('[aria-selected="true"]')?.removeAttribute("aria-selected");
  list._selected = index;
  const li = list.children[index];
  if (!li) return;
  li.setAttribute("aria-selected", "true");
  li.scrollIntoView({ block: "nearest" });
  list.setAttribute("aria-activedescendant", li.id);
}

function pick(list) {
  const item = list._items[list._selected];
  if (item !== undefined) list._onPick(item);
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}
