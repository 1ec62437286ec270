"""`make demo`: the whole product on one machine, on embedded defaults.

1. a fresh demo edge (`rapha-edge init --demo --settlement`: keys, synthetic DICOM with fake
   identifiers, embedded EVM chain with the escrow contract) and a researcher key and chain
   account registered with it (the edge funds the account from the dev chain when it starts);
2. the edge served on loopback;
3. examples/quickstart.ipynb executed headless: a local dry run, a remote run (its client
   locks price x budget in escrow before the job leaves; the release claims the records
   used and refunds the rest), the receipt;
4. `rapha verify` on the receipt, against the edge's chain over JSON-RPC (the anchor and the
   escrow claim);
5. a job the edge denies: its lock refunded in full (a claim of 0 records);
6. one differentially private job with `rapha run` (the cell hands its model and loss to
   `rapha.fit_private`; the edge's own DP-SGD trainer trains them on the demo dataset's
   budget, epsilon 8 and delta 0.001): preflight exports the model here first, and the
   epsilon spent is shown against the policy's target;
7. the edge stopped; demo-out/ holds weights.safetensors, metrics.json, receipt.json, edge.pub,
   and demo-out/private/ the DP job's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDGE_DIR = ROOT / ".demo-edge"
OUT = ROOT / "demo-out"
BIN = Path(sys.executable).parent


def run(*args: str, said: tuple[str, ...] = (), **kwargs) -> str:
    """Run a command and print its output (and the lines of its stderr that hold one of ``said``)."""
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)
    for line in done.stderr.splitlines():
        if any(words in line for words in said):
            print(line)
    if done.stdout.strip():
        print(done.stdout.strip())
    return done.stdout


def start_edge() -> tuple[subprocess.Popen, str]:
    log = open(EDGE_DIR / "serve.log", "w")
    process = subprocess.Popen([str(BIN / "rapha-edge"), "serve", "--config", str(EDGE_DIR), "--port", "0"],
                               stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = (EDGE_DIR / "serve.log").read_text()
        if "serving on " in text:
            return process, text.split("serving on ", 1)[1].split()[0]
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    sys.exit("the demo edge did not start:\n" + (EDGE_DIR / "serve.log").read_text())


# The DP job: a small CNN and its loss, handed to the edge's trainer (no record reaches the cell).
PRIVATE_CELL = """import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                      nn.Linear(8 * 8 * 8, 2))


def loss_fn(output, batch):
    return nn.functional.cross_entropy(output, batch["finding"])


rapha.fit_private(model, loss_fn, epochs=2, batch_size=16, lr=1.0, max_grad_norm=1.0)
"""


def run_private_job(url: str, key: Path) -> None:
    """One DP job with ``rapha run``: epsilon spent against the policy's target."""
    cell = OUT / "private_cell.py"
    cell.write_text(PRIVATE_CELL, "utf-8")
    out = run(str(BIN / "rapha"), "run", str(cell), "--edge", url, "--dataset", "synthetic-cxr", "--budget", "48",
              "--key", str(key), "--out", str(OUT / "private"),
              said=("privacy budget", "can be trained privately", "becomes GroupNorm"))
    spent = [line.split("privacy: ", 1)[1] for line in out.splitlines() if "privacy: DP-SGD" in line]
    if not spent:
        sys.exit("the DP job's receipt shows no privacy section")
    # the verified receipt's privacy section: "DP-SGD: epsilon 7.99 spent of 8 (delta 0.001), ..."
    print(f"DP job: {spent[0]}")


def execute_notebook(url: str, key: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    os.environ.update(EDGE_URL=url, RAPHA_KEY=str(key), RAPHA_OUT=str(OUT))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    nbformat.write(notebook, OUT / "quickstart.executed.ipynb")
    print(f"notebook executed: {OUT / 'quickstart.executed.ipynb'}")


def chain_address(path: Path) -> str:
    from eth_account import Account

    return str(Account.from_key(path.read_text().strip()).address)


def show_settlement(receipt_path: Path) -> None:
    import json

    claim = json.loads(receipt_path.read_text()).get("settlement_claim")
    if claim is None:
        sys.exit("the released receipt carries no settlement claim")
    print(f"escrow claim: {claim['records']} records, {claim['paid']} paid to the edge, {claim['refunded']} refunded"
          f" to the researcher, in {claim['tx_hash']} (contract {claim['contract']})")


def show_refund(url: str, key: Path) -> None:
    """A cell the scan gate denies: the client locks, the edge refuses, the lock comes back."""
    from jupyter_rapha.client import EdgeClient, make_jobspec
    from jupyter_rapha.escrow_client import EscrowRpc
    from jupyter_rapha.keystore import load_key

    client = EdgeClient(url, load_key(key))
    spec = make_jobspec("import socket\nsocket.socket()\n", "synthetic-cxr", ["image"], 20, 60, {},
                        client.key.key_id)
    client.submit(spec)
    status = client.wait(spec.job_id, timeout=120)
    settlement = client.edge_info()["settlement"]
    escrow = EscrowRpc(url + "/chain", settlement["contract"])
    deadline = time.monotonic() + 60
    while escrow.lock_of(spec.job_id)["state"] == "locked" and time.monotonic() < deadline:
        time.sleep(0.2)
    entry = escrow.lock_of(spec.job_id)
    if entry["state"] != "claimed" or entry["records"] != 0:
        sys.exit(f"the denied job's lock was not refunded: {entry['state']}")
    print(f"refund: job {spec.job_id[:12]} {status['state']}; its lock of {entry['amount'] / 10**18:g} was "
          "refunded in full (a claim of 0 records)")


def main() -> int:
    shutil.rmtree(EDGE_DIR, ignore_errors=True)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    run(str(BIN / "rapha-edge"), "init", str(EDGE_DIR), "--demo", "--settlement")
    if os.geteuid() != 0:
        # The air-gap needs root (namespaces, seccomp, a uid switch). Without it the demo
        # still runs, loudly unsafe: every receipt lists unsafe_no_airgap.
        print("WARNING: not root, so jobs run WITHOUT the air-gap (sandbox.unsafe_no_airgap = true)")
        toml = (EDGE_DIR / "edge.toml").read_text().replace("[sandbox]\n", "[sandbox]\nunsafe_no_airgap = true\n")
        (EDGE_DIR / "edge.toml").write_text(toml)
    key = EDGE_DIR / "researcher.pem"
    public = run(str(BIN / "rapha"), "keygen", "--out", str(key)).strip().splitlines()[-1].split()[-1]
    address = chain_address(EDGE_DIR / "researcher.chain.key")
    run(str(BIN / "rapha-edge"), "researchers", "add", "demo-researcher", public, "--chain-address", address,
        "--config", str(EDGE_DIR))
    process, url = start_edge()
    try:
        print(f"edge serving on {url}")
        execute_notebook(url, key)
        show_settlement(OUT / "receipt.json")
        run(str(BIN / "rapha"), "verify", str(OUT / "receipt.json"), "--edge-key", str(OUT / "edge.pub"),
            "--rpc", url + "/chain")
        show_refund(url, key)
        run_private_job(url, key)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"\ndemo complete: {', '.join(sorted(p.name for p in OUT.iterdir()))} in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
