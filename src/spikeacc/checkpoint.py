"""The files of a run directory: atomic writes, the directory check before training, and
reading a checkpoint back (``spikeacc train --resume``, ``spikeacc export``)."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
CHECKPOINT_FORMAT = 2  # 2: networks are ordinary modules (issue 8); format 1 held SpikingNet


def atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Write ``path`` via a temp file in the same directory, fsync, then os.replace:
    readers see the old file or the new one, never a torn one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prepare_run_dir(out: Path) -> int:
    """Create ``out`` and check it can be written (ValueError saying why otherwise), right
    before training; remove temporary files a killed run left there. Returns how many."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({why_not_writable(out, err)})") from None
    stale = [p for name in (CHECKPOINT, METRICS) for p in out.glob(f".{name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def why_not_writable(out: Path, err: OSError) -> str:
    """Why creating ``out`` or a file in it failed with ``err``, in words."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {err.filename or out}"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno == errno.ENOTDIR:
        blocking = next((p for p in (*reversed(out.parents), out) if p.exists() and not p.is_dir()), out)
        return f"{blocking} is not a directory"
    if err.errno == errno.ENOENT and out.is_dir():  # e.g. /proc: a directory that takes no new files
        return "the file system there takes no new files, like /proc"
    return err.strerror or str(err)


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu", what: str = "--resume") -> dict:
    """The dict a run saved at ``path``; ValueError (one line, prefixed by ``what``) if the
    file is missing, is not a spikeacc checkpoint, or has another format."""
    if not path.is_file():
        raise ValueError(f"{what}: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch's own message is long and suggests unsafe loading
        raise ValueError(f"{what}: {path} is not a spikeacc checkpoint (torch.load failed: "
                         f"{type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} is not a spikeacc checkpoint (holds {type(state).__name__})")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{what}: {path} has checkpoint format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
    return state


def weight_differences(net: nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """How saved ``weights`` differ from ``net``'s state_dict, in words (empty if they fit):
    entries missing there, entries this network lacks, entries shaped otherwise."""
    own = net.state_dict()
    missing = [name for name in own if name not in weights]
    extra = [name for name in weights if name not in own]
    resized = [f"{name} is {list(weights[name].shape)} there, {list(own[name].shape)} here"
               for name in own if name in weights and weights[name].shape != own[name].shape]
    return [f"{len(names)} {kind}, e.g. {names[0]}" for kind, names in
            (("missing there", missing), ("not in this network", extra), ("of another shape", resized)) if names]
