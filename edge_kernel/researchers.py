"""Registered researchers (S8): name, public key, roles and purposes.

Stored as ``researchers.json`` in the config dir, edited with ``rapha-edge researchers``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_rapha.protocol.errors import BadInput, UnknownKey
from jupyter_rapha.protocol.keys import PublicKey, load_public_key

REGISTRY_FILE = "researchers.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class Researcher:
    name: str
    public_key: str
    roles: tuple[str, ...] = ("researcher",)
    purposes: tuple[str, ...] = ("research",)

    @property
    def key(self) -> PublicKey:
        return load_public_key(self.public_key)

    @property
    def key_id(self) -> str:
        return self.key.key_id


class ResearcherRegistry:
    def __init__(self, config_dir: Path) -> None:
        self.path = config_dir / REGISTRY_FILE

    def all(self) -> list[Researcher]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            return [Researcher(r["name"], r["public_key"], tuple(r.get("roles", ["researcher"])),
                               tuple(r.get("purposes", ["research"]))) for r in raw.get("researchers", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{self.path} is malformed: each entry needs name and public_key") from exc

    def by_key_id(self, key_id: str) -> Researcher:
        for researcher in self.all():
            if researcher.key_id == key_id:
                return researcher
        raise UnknownKey("request signed by a key this edge has not registered",
                         hint="ask the hospital to run 'rapha-edge researchers add'")

    def add(self, researcher: Researcher) -> None:
        if not _NAME.match(researcher.name):
            raise BadInput("researcher name must be letters, digits, '.', '_', '@' or '-'")
        researcher.key  # validates the key text
        others = [r for r in self.all() if r.name != researcher.name and r.key_id != researcher.key_id]
        doc = {"researchers": [asdict(r) for r in [*others, researcher]]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        tmp.replace(self.path)
