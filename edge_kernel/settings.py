"""The edge's settings: one frozen object, loaded and validated at start.

Everything lives under one config directory (``rapha-edge init DIR``):

    edge.toml            these settings (hospital-edited)
    keys/                edge_ed25519.pem, pseudonym.key, chain.key (mode 0600)
    state/               edge.sqlite (jobs, audit, nonces), chain/ (embedded chain journal), jobs/,
                         cache/ (decoded records and dataset indexes, by digest)
    datasets.json        dataset registry (rapha-edge datasets add)
    researchers.json     registered researcher keys (rapha-edge researchers add)

An invalid file stops the start with a message naming the key to fix: a wrong type, a
value out of range, and an unknown key or table (a typo such as ``min_confirmatons``
would otherwise be ignored, and the default it leaves in force would go unnoticed).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.jobspec import MAX_JOB_PROCESSES

CONFIG_FILE = "edge.toml"


@dataclass(frozen=True)
class ChainSettings:
    backend: str = "embedded"  # "embedded" (eth-tester, served at /chain), "rpc" or "rfc3161" (a TSA, no chain)
    rpc_url: str = ""
    tsa_url: str = ""  # rfc3161: the Time-Stamp Authority's HTTP endpoint
    tsa_certificate: str = ""  # rfc3161: PEM of the TSA certificate or its chain; answers are checked against it
    chain_id: int = 0  # 0: take the chain's own id (then the RPC must be up when the edge starts)
    min_confirmations: int = 1  # the edge publishes an anchor only this deep in the chain
    key_file: str = ""  # funded secp256k1 key (hex, mode 0600); empty: keys/chain.key
    batch_size: int = 100  # receipts per anchor transaction, at most
    batch_interval_seconds: float = 2.0  # a receipt waits at most this long for others to join its batch
    release_wait_seconds: float = 20.0  # then results are released "anchor pending" and anchored later
    retry_initial_seconds: float = 1.0  # backoff after a failed chain round, doubling ...
    retry_max_seconds: float = 300.0  # ... up to this; retries never stop while the edge runs
    rpc_timeout_seconds: float = 30.0
    fee_bump_seconds: float = 180.0  # an anchor unmined this long is sent again, same nonce, fees +12.5%
    # Decimal places of the token researchers settle in on chain (18: the chain's native
    # currency); a dataset price with more places is refused at 'datasets add'.
    token_decimals: int = 18
    # Settle priced datasets on chain (embedded chain only, so far): the edge's escrow
    # contract is deployed on its chain, a job on a dataset with a price > 0 runs only when
    # its researcher's registered chain account locked price x budget for it, and its
    # release claims records used x price (a job that ends without release claims 0).
    settlement: bool = False


@dataclass(frozen=True)
class SandboxSettings:
    airgap_binary: str = ""  # empty: look for rust/airgap/target/release/rapha-airgap, then PATH
    python: str = ""  # interpreter for job processes; empty: the edge's own
    # Keeps each job's working directory (its cell, and stdout/stderr, which may hold record
    # data the cell printed) after the job: weakens S2, so unsafe_*: for debugging only,
    # warns on every job and is written into the receipt. Off: deleted once outputs are read.
    unsafe_keep_job_files: bool = False
    # The appliance's WAN interface, severed while jobs run (empty: no appliance WAN gate).
    wan_interface: str = ""
    # Runs jobs without the air-gap. Never in production: warns on every job and is
    # written into the receipt.
    unsafe_no_airgap: bool = False
    # The distributions the catalog names with their versions; empty: every one installed.
    # The key ones (torch, numpy, monai, pydicom, safetensors) are named whenever installed.
    listed_packages: tuple[str, ...] = ()
    # The NVIDIA GPUs a job's sandbox is given: "all", a list of indices ([0, 1]), or none
    # (the default). Checked against the host's driver when the edge starts (sandbox/gpus.py).
    gpus: str | tuple[int, ...] = ()
    # Where the driver's user-space libraries (libcuda, libnvidia-ml, ...) are; empty: the
    # dynamic loader's cache (ldconfig -p), as the NVIDIA Container Toolkit finds them.
    gpu_library_dirs: tuple[str, ...] = ()
    # Job processes one job may start under its sandbox (``--processes``, torch.distributed
    # ranks). Above 1 such a job runs under the seccomp variant that allows TCP on its own
    # loopback, so the default keeps every job to one process until the hospital opts in.
    max_processes: int = 1


@dataclass(frozen=True)
class AttestationSettings:
    backend: str = "auto"  # "auto", "tdx", "sgx" or "unsafe_software" (demo mode only)
    collateral: str = ""  # offline DCAP collateral bundle (JSON); empty: TCB status unknown
    policy: str = ""  # attestation policy data (allowlist, debug, TCB); empty: the built-in default


@dataclass(frozen=True)
class DataSettings:
    # Decoder processes that prepare records ahead of a job's requests (outside the
    # sandbox; never researcher code). None: the cores the job does not need (all but
    # one); 0: the broker thread decodes, one record at a time.
    decode_workers: int | None = None
    # Decoded, preprocessed records kept in state/cache/ for later epochs and jobs, least
    # recently used out first; 0: no disk cache (the dataset index is still cached).
    cache_max_mib: int = 16384

    def workers(self) -> int:
        if self.decode_workers is not None:
            return self.decode_workers
        return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class ArtifactSettings:
    # What the uploaded artifacts of one researcher may take on the edge's disk together;
    # an upload past it is refused before its body is read, naming this limit.
    max_stored_mib: int = 4096
    # An artifact that no job waiting to run names, and that no job used and its owner did
    # not upload again for this many days, is deleted (checked at each upload and at start).
    keep_unused_days: int = 30

    @property
    def max_stored_bytes(self) -> int:
        return self.max_stored_mib * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    config_dir: Path
    edge_id: str
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 8470
    currency: str = "GBP"
    tls_cert: str = ""  # PEM certificate (chain) for HTTPS; empty: plain HTTP (loopback or behind a TLS proxy)
    tls_key: str = ""
    chain: ChainSettings = field(default_factory=ChainSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    attestation: AttestationSettings = field(default_factory=AttestationSettings)
    data: DataSettings = field(default_factory=DataSettings)
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    unsafe: tuple[str, ...] = ()

    @property
    def keys_dir(self) -> Path:
        return self.config_dir / "keys"

    @property
    def state_dir(self) -> Path:
        return self.config_dir / "state"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "edge.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def cache_dir(self) -> Path:
        """Decoded records and dataset indexes (``edge_kernel/data/record_store.py``)."""
        return self.state_dir / "cache"

    @property
    def policies_dir(self) -> Path:
        return self.config_dir / "policies"

    def path(self, configured: str) -> Path | None:
        """A configured path, relative to the config dir; None when not configured."""
        if not configured:
            return None
        path = Path(configured)
        return path if path.is_absolute() else self.config_dir / path


def load_settings(config_dir: str | Path) -> Settings:
    root = Path(config_dir).resolve()
    path = root / CONFIG_FILE
    if not path.is_file():
        raise BadInput(f"no {CONFIG_FILE} in {root}", hint="create one with 'rapha-edge init DIR'")
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from exc
    return _settings(root, data)


def _settings(root: Path, data: dict[str, Any]) -> Settings:
    """An unknown key is reported before any other fault, since it is the likelier cause
    (a misspelt key leaves its default in force, which then fails some other check)."""
    document = _Table(data)
    try:
        settings = _read_settings(root, document)
    except BadInput:
        _check_unknown(document)
        raise
    _check_unknown(document)
    return settings


def _known_keys() -> dict[str, tuple[str, ...]]:
    """The valid keys of each table. The sub-settings tables mirror their dataclasses."""
    return {"edge": ("id", "demo", "currency"), "server": ("host", "port", "tls_cert", "tls_key"),
            "chain": tuple(f.name for f in fields(ChainSettings)),
            "sandbox": tuple(f.name for f in fields(SandboxSettings)),
            "attestation": tuple(f.name for f in fields(AttestationSettings)),
            "data": tuple(f.name for f in fields(DataSettings)),
            "artifacts": tuple(f.name for f in fields(ArtifactSettings))}


class _Table(dict[str, Any]):
    """A TOML table that remembers which keys the settings read, so that a key added to
    the reader is known even before it is added to ``_known_keys``."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.asked: dict[str, None] = {}
        self.children: dict[str, _Table] = {}

    def get(self, key: str, default: Any = None) -> Any:
        self.asked[key] = None
        value = super().get(key, default)
        if isinstance(value, dict) and key in self:
            value = self.children.setdefault(key, _Table(value))
        return value


def _check_unknown(document: _Table) -> None:
    known = _known_keys()
    tables = {**dict.fromkeys(known), **document.asked}
    for name, value in document.items():
        if name in tables:
            continue
        if isinstance(value, dict):
            raise BadInput(f"unknown table [{name}] in {CONFIG_FILE}{_nearest(name, tables, '[', ']')}")
        owner = next((t for t, keys in known.items() if name in keys), None)
        hint = f"; did you mean {name} under [{owner}]?" if owner else _nearest(name, tables, "[", "]")
        raise BadInput(f"unknown key {name} outside any table in {CONFIG_FILE}{hint}")
    for name, value in document.items():
        if not isinstance(value, dict):
            continue  # a table that is not a table is reported by the reader
        valid = {**dict.fromkeys(known.get(name, ())), **document.children.get(name, _Table({})).asked}
        for key in value:
            if key not in valid:
                raise BadInput(f"unknown key {name}.{key} in {CONFIG_FILE}{_nearest(key, valid)}")


def _nearest(name: str, valid: dict[str, None], before: str = "", after: str = "") -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {before}{close[0]}{after}?"
    return f"; the valid ones are {', '.join(before + v + after for v in valid)}"


def _refuse_renamed(table: dict[str, Any], table_name: str, old: str, new: str) -> None:
    """A key that was renamed: refused naming the new one, never silently dropped (the old
    name still in an edge.toml would otherwise turn the setting off without a word)."""
    if table.get(old) is not None:  # get(): the key is then known, so this message is the one shown
        raise BadInput(f"{table_name}.{old} in {CONFIG_FILE} is now {table_name}.{new}",
                       hint=f"rename it {new}: it weakens a safeguard, so its name says unsafe")


def _read_settings(root: Path, data: dict[str, Any]) -> Settings:
    edge = _table(data, "edge")
    server = _table(data, "server")
    chain = _table(data, "chain")
    sandbox = _table(data, "sandbox")
    attestation = _table(data, "attestation")
    data_settings = _data_settings(_table(data, "data"))
    artifact_settings = _artifact_settings(_table(data, "artifacts"))
    chain_settings = ChainSettings(
        backend=_choice(chain, "chain.backend", "backend", ("embedded", "rpc", "rfc3161"), _CHAIN.backend),
        rpc_url=_typed(chain, "chain.rpc_url", "rpc_url", str, _CHAIN.rpc_url),
        tsa_url=_typed(chain, "chain.tsa_url", "tsa_url", str, _CHAIN.tsa_url),
        tsa_certificate=_typed(chain, "chain.tsa_certificate", "tsa_certificate", str, _CHAIN.tsa_certificate),
        chain_id=_typed(chain, "chain.chain_id", "chain_id", int, _CHAIN.chain_id),
        min_confirmations=_typed(chain, "chain.min_confirmations", "min_confirmations", int, _CHAIN.min_confirmations),
        key_file=_typed(chain, "chain.key_file", "key_file", str, _CHAIN.key_file),
        batch_size=_typed(chain, "chain.batch_size", "batch_size", int, _CHAIN.batch_size),
        token_decimals=_typed(chain, "chain.token_decimals", "token_decimals", int, _CHAIN.token_decimals),
        settlement=_typed(chain, "chain.settlement", "settlement", bool, _CHAIN.settlement),
        **{key: _seconds(chain, key, default) for key, default in _CHAIN_SECONDS.items()},
    )
    if not 1 <= chain_settings.batch_size <= 100_000 or chain_settings.min_confirmations < 1:
        raise BadInput("chain.batch_size must be 1 to 100000 and chain.min_confirmations at least 1")
    if not 0 <= chain_settings.token_decimals <= 36:
        raise BadInput(f"chain.token_decimals in {CONFIG_FILE} must be 0 to 36, not {chain_settings.token_decimals}")
    if chain_settings.settlement and chain_settings.backend != "embedded":
        raise BadInput(f"chain.settlement in {CONFIG_FILE} needs chain.backend = \"embedded\" for now",
                       hint="the escrow is driven on the embedded chain only; set settlement = false")
    if chain_settings.backend == "rpc" and not chain_settings.rpc_url:
        raise BadInput("chain.backend is 'rpc' but chain.rpc_url is empty")
    if chain_settings.backend == "rfc3161" and not (chain_settings.tsa_url and chain_settings.tsa_certificate):
        raise BadInput("chain.backend is 'rfc3161' but chain.tsa_url or chain.tsa_certificate is empty")
    sandbox_settings = SandboxSettings(
        airgap_binary=_typed(sandbox, "sandbox.airgap_binary", "airgap_binary", str, _SANDBOX.airgap_binary),
        python=_typed(sandbox, "sandbox.python", "python", str, _SANDBOX.python),
        unsafe_no_airgap=_typed(sandbox, "sandbox.unsafe_no_airgap", "unsafe_no_airgap", bool,
                                _SANDBOX.unsafe_no_airgap),
        wan_interface=_typed(sandbox, "sandbox.wan_interface", "wan_interface", str, _SANDBOX.wan_interface),
        unsafe_keep_job_files=_typed(sandbox, "sandbox.unsafe_keep_job_files", "unsafe_keep_job_files", bool,
                                     _SANDBOX.unsafe_keep_job_files),
    )
    _refuse_renamed(sandbox, "sandbox", "keep_job_files", "unsafe_keep_job_files")
    sandbox_settings = replace(sandbox_settings, listed_packages=_names(sandbox, "sandbox.listed_packages",
                                                                        "listed_packages"),
                               gpus=_gpus(sandbox), gpu_library_dirs=_library_dirs(sandbox))
    sandbox_settings = replace(sandbox_settings, max_processes=_max_processes(sandbox))
    attestation_settings = AttestationSettings(
        backend=_choice(attestation, "attestation.backend", "backend", ("auto", "tdx", "sgx", "unsafe_software"),
                        _ATTESTATION.backend),
        collateral=_typed(attestation, "attestation.collateral", "collateral", str, _ATTESTATION.collateral),
        policy=_typed(attestation, "attestation.policy", "policy", str, _ATTESTATION.policy),
    )
    demo = _typed(edge, "edge.demo", "demo", bool, DEFAULTS["demo"])
    if attestation_settings.backend == "unsafe_software" and not demo:
        raise BadInput("attestation.backend 'unsafe_software' is allowed only with edge.demo = true")
    software_attestation = attestation_settings.backend == "unsafe_software"
    unsafe = tuple(name for name, on in (("unsafe_no_airgap", sandbox_settings.unsafe_no_airgap),
                                         ("unsafe_software_attestation", software_attestation),
                                         ("unsafe_keep_job_files", sandbox_settings.unsafe_keep_job_files))
                   if on)
    port = _typed(server, "server.port", "port", int, DEFAULTS["port"])
    if not 0 <= port <= 65535:
        raise BadInput("server.port must be from 0 to 65535")
    tls_cert = _typed(server, "server.tls_cert", "tls_cert", str, DEFAULTS["tls_cert"])
    tls_key = _typed(server, "server.tls_key", "tls_key", str, DEFAULTS["tls_key"])
    if bool(tls_cert) != bool(tls_key):
        raise BadInput("server.tls_cert and server.tls_key must be set together")
    edge_id = _typed(edge, "edge.id", "id", str, "")
    if not edge_id:
        raise BadInput("edge.id must be set in edge.toml")
    return Settings(
        config_dir=root, edge_id=edge_id, demo=demo,
        host=_typed(server, "server.host", "host", str, DEFAULTS["host"]), port=port,
        tls_cert=tls_cert, tls_key=tls_key,
        currency=_typed(edge, "edge.currency", "currency", str, DEFAULTS["currency"]),
        chain=chain_settings, sandbox=sandbox_settings, attestation=attestation_settings, data=data_settings,
        artifacts=artifact_settings, unsafe=unsafe,
    )


MAX_DECODE_WORKERS = 256


def _data_settings(table: dict[str, Any]) -> DataSettings:
    workers = table.get("decode_workers")
    if workers is not None:
        workers = _typed(table, "data.decode_workers", "decode_workers", int, None)
        if not 0 <= workers <= MAX_DECODE_WORKERS:
            raise BadInput(f"data.decode_workers must be from 0 to {MAX_DECODE_WORKERS} (leave it out for "
                           "the cores the job does not need)")
    cache_mib = _typed(table, "data.cache_max_mib", "cache_max_mib", int, _DATA.cache_max_mib)
    if cache_mib < 0:
        raise BadInput("data.cache_max_mib must be 0 (no disk cache) or more")
    return DataSettings(decode_workers=workers, cache_max_mib=cache_mib)


def _artifact_settings(table: dict[str, Any]) -> ArtifactSettings:
    stored = _typed(table, "artifacts.max_stored_mib", "max_stored_mib", int, _ARTIFACTS.max_stored_mib)
    if stored < 1:
        raise BadInput("artifacts.max_stored_mib must be 1 or more (MiB of uploads kept per researcher)")
    days = _typed(table, "artifacts.keep_unused_days", "keep_unused_days", int, _ARTIFACTS.keep_unused_days)
    if days < 1:
        raise BadInput("artifacts.keep_unused_days must be 1 or more (days an artifact no job uses is kept)")
    return ArtifactSettings(max_stored_mib=stored, keep_unused_days=days)


# Each default is written once, in the dataclasses above: the reader and `rapha-edge init`'s
# edge.toml take theirs from here.
_CHAIN, _SANDBOX, _ATTESTATION, _DATA = ChainSettings(), SandboxSettings(), AttestationSettings(), DataSettings()
_ARTIFACTS = ArtifactSettings()
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
_CHAIN_SECONDS = {name: getattr(_CHAIN, name) for name in (
    "batch_interval_seconds", "release_wait_seconds", "retry_initial_seconds", "retry_max_seconds",
    "rpc_timeout_seconds", "fee_bump_seconds")}


def _seconds(table: dict[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
        raise BadInput(f"chain.{key} in edge.toml must be a number of seconds, above 0 and at most 86400")
    return float(value)


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise BadInput(f"[{name}] in edge.toml must be a table")
    return value


def _typed(table: dict[str, Any], label: str, key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        given = _KINDS.get(type(value), "a " + type(value).__name__)
        raise BadInput(f"{label} in {CONFIG_FILE} must be {_KINDS[kind]}, not {given}"
                       f" ({json.dumps(value, default=str)})")
    return value


def _max_processes(sandbox: dict[str, Any]) -> int:
    value = _typed(sandbox, "sandbox.max_processes", "max_processes", int, _SANDBOX.max_processes)
    if not 1 <= value <= MAX_JOB_PROCESSES:
        raise BadInput(f"sandbox.max_processes in {CONFIG_FILE} must be 1 to {MAX_JOB_PROCESSES}, not {value}")
    return int(value)


def _names(table: dict[str, Any], label: str, key: str) -> tuple[str, ...]:
    value = _typed(table, label, key, list, [])
    if not all(isinstance(name, str) and name.strip() for name in value):
        raise BadInput(f"{label} in {CONFIG_FILE} must be a list of distribution names in quotes")
    return tuple(name.strip() for name in value)


MAX_GPU_INDEX = 255


def _gpus(table: dict[str, Any]) -> str | tuple[int, ...]:
    value = table.get("gpus", [])
    if value == "all":
        return "all"
    fix = 'write "all", a list of GPU indices such as [0, 1], or [] for none'
    if not isinstance(value, list):
        raise BadInput(f"sandbox.gpus in {CONFIG_FILE} must be \"all\" or a list of GPU indices, "
                       f"not {json.dumps(value, default=str)}", hint=fix)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_GPU_INDEX for i in value):
        raise BadInput(f"sandbox.gpus in {CONFIG_FILE} must list GPU indices from 0 to {MAX_GPU_INDEX}, "
                       f"not {json.dumps(value, default=str)}", hint=fix)
    if len(set(value)) != len(value):
        raise BadInput(f"sandbox.gpus in {CONFIG_FILE} names a GPU twice: {json.dumps(value)}", hint=fix)
    return tuple(sorted(value))


def _library_dirs(table: dict[str, Any]) -> tuple[str, ...]:
    value = _typed(table, "sandbox.gpu_library_dirs", "gpu_library_dirs", list, [])
    if not all(isinstance(d, str) and d.startswith("/") for d in value):
        raise BadInput(f"sandbox.gpu_library_dirs in {CONFIG_FILE} must be a list of absolute folder paths "
                       "in quotes")
    return tuple(value)


_KINDS: dict[type, str] = {str: "a string in quotes", int: "a whole number", bool: "true or false",
                           float: "a number", list: "a list", dict: "a table"}


def _choice(table: dict[str, Any], label: str, key: str, options: tuple[str, ...], default: str) -> str:
    value = _typed(table, label, key, str, default)
    if value not in options:
        raise BadInput(f"{label} must be one of {', '.join(options)}")
    return str(value)
