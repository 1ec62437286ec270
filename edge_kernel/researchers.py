"""Registered researchers (S8): name, public key, roles and purposes.

Stored as ``researchers.json`` in the config dir, edited with ``rapha-edge researchers``.
A name and a key each belong to one entry: adding either again is refused unless the
administrator says ``replace``, so no registration is dropped without being named.

Roles are the policy's to interpret, with one the edge itself reads: ``output-checker``,
held by hospital staff who approve or reject the release of held outputs (``rapha-edge
release``), and ``data-steward``, held by those who approve or reject a job before it runs
where a dataset's policy asks for that (``run_approval``). Their decisions are statements
signed with the key registered here.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from jupyter_rapha.protocol.errors import BadInput, NotFound, UnknownKey
from jupyter_rapha.protocol.keys import PublicKey, load_public_key

from .config_files import config_fault, write_json_atomically
from .parsed_file import ParsedFile

REGISTRY_FILE = "researchers.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
OUTPUT_CHECKER = "output-checker"
DATA_STEWARD = "data-steward"
EDGE_ROLES = (OUTPUT_CHECKER, DATA_STEWARD)  # the roles the edge itself reads


@dataclass(frozen=True)
class Researcher:
    name: str
    public_key: str
    roles: tuple[str, ...] = ("researcher",)
    purposes: tuple[str, ...] = ("research",)
    # The researcher's own chain account (0x address, checksummed), from which they lock
    # escrow for their jobs; "" when none is registered (then no job on a priced dataset
    # runs on an edge that settles on chain).
    chain_address: str = ""

    @property
    def key(self) -> PublicKey:
        return load_public_key(self.public_key)

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def is_output_checker(self) -> bool:
        return OUTPUT_CHECKER in self.roles

    @property
    def is_data_steward(self) -> bool:
        return DATA_STEWARD in self.roles

    @property
    def is_staff_only(self) -> bool:
        """Held only roles the edge reads for hospital staff: such a key decides, it never submits."""
        return bool(self.roles) and set(self.roles) <= set(EDGE_ROLES)


@dataclass(frozen=True)
class _Loaded:
    researchers: tuple[Researcher, ...]
    by_key_id: dict[str, Researcher]  # the first entry with each key, as a scan in file order finds it


class ResearcherRegistry:
    def __init__(self, config_dir: Path) -> None:
        self.path = config_dir / REGISTRY_FILE
        # Loaded again whenever the file changes (see parsed_file): a removed researcher
        # is refused from the next request on.
        self._file = ParsedFile(self.path, self._load)

    def all(self) -> list[Researcher]:
        """Every entry, each key checked: a broken file is a configuration fault (the
        request that meets it gets a generic 500, the cause goes to the edge log)."""
        return list(self._file.get().researchers)

    def by_key_id(self, key_id: str) -> Researcher:
        found = self._file.get().by_key_id.get(key_id)
        if found is not None:
            return found
        raise UnknownKey("request signed by a key this edge has not registered",
                         hint="ask the hospital to run 'rapha-edge researchers add'")

    def by_name(self, name: str) -> Researcher:
        for researcher in self.all():
            if researcher.name == name:
                return researcher
        raise UnknownKey(f"no one named {name!r} is registered at this edge",
                         hint="see 'rapha-edge researchers list'")

    def output_checkers(self) -> list[Researcher]:
        return [r for r in self.all() if r.is_output_checker]

    def _load(self) -> _Loaded:
        found = self._read()
        index: dict[str, Researcher] = {}
        for researcher in found:
            index.setdefault(researcher.key_id, researcher)
        return _Loaded(tuple(found), index)

    def _read(self) -> list[Researcher]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            found = [Researcher(r["name"], r["public_key"], tuple(r.get("roles", ["researcher"])),
                                tuple(r.get("purposes", ["research"])), str(r.get("chain_address", "")))
                     for r in raw.get("researchers", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise config_fault(self.path, "each entry needs name and public_key",
                               hint="fix it or re-register with 'rapha-edge researchers add'") from exc
        for researcher in found:
            try:
                _ = researcher.key  # parses the key: a bad one is the file's fault, found at load
            except BadInput as exc:
                raise config_fault(self.path, f"the public key of {researcher.name!r} is not valid",
                                   hint="re-register it with 'rapha-edge researchers add --replace'") from exc
        return found

    def add(self, researcher: Researcher, *, replace: bool = False) -> list[Researcher]:
        """Register ``researcher``; return the entries it replaced (only with ``replace``)."""
        if not _NAME.match(researcher.name):
            raise BadInput("researcher name must be letters, digits, '.', '_', '@' or '-'")
        for role in researcher.roles:
            check_role(role)
        if researcher.chain_address:
            researcher = replace_address(researcher, check_chain_address(researcher.chain_address))
        key_id = researcher.key_id  # validates the key text
        current = self.all()
        clashing = [r for r in current if r.name == researcher.name or r.key_id == key_id]
        if clashing and not replace:
            raise BadInput(_clash(researcher, key_id, clashing),
                           hint="add --replace to replace it, or 'rapha-edge researchers remove NAME' first")
        kept = [r for r in current if r not in clashing]
        self._write([*kept, researcher])
        return clashing

    def remove(self, name: str) -> Researcher:
        current = self.all()
        found = [r for r in current if r.name == name]
        if not found:
            known = ", ".join(r.name for r in current) or "none"
            raise NotFound(f"no researcher named {name!r} is registered (registered: {known})")
        self._write([r for r in current if r.name != name])
        return found[0]

    def _write(self, researchers: list[Researcher]) -> None:
        write_json_atomically(self.path, {"researchers": [asdict(r) for r in researchers]})


def check_chain_address(text: str) -> str:
    """A researcher's chain address, checksummed; a malformed one (or one whose mixed case
    fails its checksum, a typo) is refused when it is registered."""
    from eth_utils.address import is_address, is_checksum_address, to_checksum_address

    value = str(text).strip()
    digits = value[2:]
    mixed = digits != digits.lower() and digits != digits.upper()
    if not value.startswith("0x") or not is_address(value) or (mixed and not is_checksum_address(value)):
        raise BadInput(f"chain address {value!r} is not a 20-byte 0x address (or its checksum fails)",
                       hint="give the address 'rapha keygen' printed for the researcher")
    return str(to_checksum_address(value))


def replace_address(researcher: Researcher, address: str) -> Researcher:
    from dataclasses import replace

    return replace(researcher, chain_address=address)


def check_role(role: str) -> None:
    """A role is a plain name; one a letter or two from ``output-checker`` or
    ``data-steward`` is a typo that would leave a checker or steward unable to decide, so it
    is refused when it is made."""
    if not _NAME.match(role):
        raise BadInput(f"role {role!r} must be letters, digits, '.', '_', '@' or '-'")
    close = difflib.get_close_matches(role.lower(), EDGE_ROLES, n=1, cutoff=0.8)
    if role not in EDGE_ROLES and close:
        raise BadInput(f"role {role!r} is not {close[0]!r}; did you mean {close[0]}?",
                       hint="roles other than output-checker and data-steward are read by the policy "
                            "(policies/data.json)")


def _clash(researcher: Researcher, key_id: str, clashing: list[Researcher]) -> str:
    for other in clashing:
        if other.key_id == key_id and other.name != researcher.name:
            return f"this key (key {key_id}) is already registered as {other.name!r}"
    return f"a researcher named {researcher.name!r} is already registered (key {clashing[0].key_id})"
