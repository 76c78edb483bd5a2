"""Saving and loading a template store as JSON, so data right after a restart still decodes.

The file holds templates, options-learned sampling rates and exporter boot times (``version``
1); it is written to a temporary sibling and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ingest.decode.store import TemplateStore
from ingest.decode.templates import Template


def save_state(store: TemplateStore, path: str | os.PathLike) -> None:
    """Write templates, options-learned sampling rates and boot times as JSON (atomically)."""
    state = {
        "version": 1,
        "templates": [t.to_json() for t in store.templates.values()],
        "samplers": [[k[0].hex(), k[1], k[2], r] for k, r in store.samplers.items()],
        "system_init": [[k[0].hex(), k[1], ms] for k, ms in store.system_init.items()],
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def load_state(store: TemplateStore, path: str | os.PathLike) -> int:
    """Restore what ``save_state`` wrote into ``store``; returns the number of templates loaded."""
    state = json.loads(Path(path).read_text())
    if state.get("version") != 1:
        raise ValueError(f"{path}: unknown decoder state version {state.get('version')!r}; delete the file")
    limits = store.limits
    for data in state["templates"][: limits.max_templates]:
        tmpl = Template.from_json(data)
        store.templates[tmpl.key] = tmpl
        store.exporters.add(tmpl.key[0])
    for exp, domain, sampler, rate in state["samplers"][: limits.max_sampler_entries]:
        store.samplers[(bytes.fromhex(exp), domain, sampler)] = rate
    for exp, domain, ms in state["system_init"]:
        store.system_init[(bytes.fromhex(exp), domain)] = ms
    store.stats.templates = len(store.templates)
    return len(state["templates"])
