"""Start ``world_size`` worker processes on this machine, each a rank of one ``torch.distributed`` group.

:func:`run` is what ``torchrun`` / ``torch.multiprocessing.spawn`` do, cut down to what a
notebook needs: a fresh Python process per rank (the *spawn* start method: safe with threads
and CUDA, and the only method that also works on macOS and Windows), the default process group
initialised on 127.0.0.1, ``fn(rank, world_size, *args)`` called in each, and the per-rank
return values handed back in rank order. Everything between the ranks goes through PyTorch's
own engine (``gloo`` on the CPU, ``nccl`` on GPUs).

The rendezvous store (a ``torch.distributed.TCPStore``) lives in the calling process on a port
the operating system picks, so two runs never race for a port. A rank that raises makes
:func:`run` raise :class:`WorkerError` carrying that rank's traceback; ranks still running past
``timeout`` are killed and :func:`run` raises ``TimeoutError``. Either way no worker process is
left behind.

``fn`` and ``args`` travel to the workers by pickling, so ``fn`` must be importable by name: a
function defined in a module (llmlab's, or your own ``.py`` file), not in a notebook cell.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import multiprocessing as mp
import os
import pickle
import queue
import socket
import sys
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist

from .._checks import check_choice, check_float, check_int

__all__ = ["BACKENDS", "MAX_WORLD_SIZE", "WorkerError", "run", "check_importable"]

#: Backends :func:`run` can start: ``gloo`` (CPU tensors; CUDA tensors too, through the host) and ``nccl`` (GPUs).
BACKENDS = ("gloo", "nccl")
#: More ranks than this on one machine is a mistake: each rank is a Python process holding its own
#: copy of torch (a few hundred MB), and they share the machine's cores.
MAX_WORLD_SIZE = 32

#: Seconds a worker gets to exit by itself after reporting success, before it is killed.
_EXIT_GRACE_S = 10.0


class WorkerError(RuntimeError):
    """A worker raised: ``rank`` is the first rank that reported an exception, ``worker_traceback``
    its traceback as text (also in the message); ``failed_ranks`` all ranks that raised."""

    def __init__(self, rank: int, worker_traceback: str, failed_ranks: tuple[int, ...] = ()):
        self.rank = rank
        self.worker_traceback = worker_traceback
        self.failed_ranks = tuple(failed_ranks) or (rank,)
        others = [r for r in self.failed_ranks if r != rank]
        also = f" (ranks {others} failed too)" if others else ""
        super().__init__(f"rank {rank} failed{also}:\n{worker_traceback}")


def _loopback_interface() -> str | None:
    """Name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS), if there is one."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):  # not available on every platform
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def check_importable(name: str, value) -> None:
    """``value`` (a function, class, ``functools.partial`` or callable object) must be callable and
    importable by name from a spawned process: pickle sends functions and classes by reference.

    ``TypeError`` if it is not callable; ``ValueError`` if it (or the class of a callable object) was
    defined in a notebook cell or an interactive session, inside a function, or is a lambda.
    """
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    target = value.func if isinstance(value, functools.partial) else value
    if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.isbuiltin(target)):
        target = type(target)  # a callable object: its class must be importable
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    interactive = module == "__main__" and not getattr(sys.modules.get("__main__"), "__file__", None)
    if interactive or "<locals>" in qualname or "<lambda>" in qualname:
        where = " (it was defined in a notebook cell)" if interactive else ""
        raise ValueError(f"{name}={qualname or value!r} cannot be imported by a new process{where}: define it in a .py module")


def _pickled(fn, args) -> bytes:
    try:
        return pickle.dumps((fn, args))
    except Exception as e:  # pickle raises several types (PicklingError, TypeError, AttributeError)
        raise TypeError(f"fn and args must be picklable to reach the worker processes: {e}") from e


def run(fn: Callable[..., Any], world_size: int, *args, backend: str = "gloo", timeout: float = 60) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes, one per rank; return the
    ``world_size`` results in rank order.

    In each worker the default process group (``backend``) is initialised before ``fn`` is called,
    so ``fn`` may use ``torch.distributed`` collectives, ``DistributedDataParallel``, FSDP ...;
    the torchrun environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
    and ``MASTER_PORT`` are set too. Each worker gets ``cpu_count // world_size`` (at least 1)
    torch threads. With ``backend="nccl"`` rank r uses GPU r.

    ``world_size`` in [1, :data:`MAX_WORLD_SIZE`]. ``timeout`` (seconds, > 0) bounds the whole run,
    process start-up included (a few seconds per process on a laptop): past it every worker still
    running is killed and ``TimeoutError`` is raised. If a worker raises, the others are killed
    and :class:`WorkerError` is raised with that worker's traceback. Return values must be
    picklable (move CUDA tensors to the CPU first).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(rank, world_size, *args), got {type(fn).__name__}")
    check_importable("fn", fn)
    world_size = check_int("world_size", world_size, low=1, high=MAX_WORLD_SIZE)
    check_choice("backend", backend, BACKENDS)
    timeout = check_float("timeout", timeout, low=0, low_open=True)
    if backend == "nccl" and (not torch.cuda.is_available() or torch.cuda.device_count() < world_size):
        raise ValueError(f"backend='nccl' needs one CUDA GPU per rank: world_size={world_size} is too many here")
    payload = _pickled(fn, args)
    ctx = mp.get_context("spawn")
    results: queue.Queue = ctx.Queue()
    # The rendezvous store lives here, on a port the OS picks: no free-port race between runs.
    store = dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(seconds=timeout), wait_for_workers=False)
    procs = [ctx.Process(target=_worker, args=(rank, world_size, backend, store.port, timeout, payload, results),
                         name=f"llmlab-rank{rank}", daemon=True)
             for rank in range(world_size)]
    done = False
    try:
        for p in procs:
            p.start()
        outputs = _collect(procs, results, time.monotonic() + timeout, timeout)
        done = True
    finally:
        _stop(procs, graceful=done)
        results.close()
        del store
    return [pickle.loads(outputs[rank]) for rank in range(world_size)]


def _collect(procs, results, deadline: float, timeout: float) -> dict[int, bytes]:
    """Wait for one message per rank; raise on the first failure, a silent death or the deadline."""
    outputs: dict[int, bytes] = {}
    errors: dict[int, str] = {}
    while len(outputs) < len(procs):
        if errors:
            # A rank failed; its peers usually fail next (their collectives lose a partner). Collect
            # what arrives within a moment and report the first error, the likely cause.
            first = next(iter(errors))
            _drain(results, outputs, errors, wait=0.5)
            silent = _silent_deaths(procs, outputs, errors)
            if silent:  # a rank that died without a word is the likelier cause of its peers' errors
                raise WorkerError(silent[0], _death_note(procs[silent[0]]), tuple(sorted([*errors, *silent])))
            raise WorkerError(first, errors[first], tuple(sorted(errors)))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = [r for r in range(len(procs)) if r not in outputs]
            raise TimeoutError(f"ranks {missing} still running after timeout={timeout:g} s: all workers killed")
        try:
            rank, ok, data = results.get(timeout=min(0.2, remaining))
        except queue.Empty:
            if _silent_deaths(procs, outputs, errors):
                _drain(results, outputs, errors, wait=1.0)  # its last message may still be in the pipe
                silent = _silent_deaths(procs, outputs, errors)
                if silent and not errors:
                    raise WorkerError(silent[0], _death_note(procs[silent[0]]))
            continue
        (outputs if ok else errors)[rank] = data
    return outputs


def _silent_deaths(procs, outputs: dict, errors: dict) -> list[int]:
    """Ranks whose process has exited without sending anything."""
    return [r for r, p in enumerate(procs) if p.exitcode is not None and r not in outputs and r not in errors]


def _death_note(proc) -> str:
    return (f"the process exited with code {proc.exitcode} without a result (killed by a signal, out of "
            "memory, os._exit, or a crash before llmlab's worker code ran): no traceback; see its stderr")


def _drain(results, outputs: dict, errors: dict, wait: float) -> None:
    """Read the messages that arrive within ``wait`` seconds."""
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        try:
            rank, ok, data = results.get(timeout=left)
        except queue.Empty:
            return
        (outputs if ok else errors).setdefault(rank, data)


def _stop(procs, *, graceful: bool) -> None:
    """Join every worker: let finished ones exit (after success), terminate, then kill the rest."""
    if graceful:
        end = time.monotonic() + _EXIT_GRACE_S
        for p in procs:
            if p.pid is not None:
                p.join(max(0.0, end - time.monotonic()))
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is not None:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join()


def _worker(rank: int, world_size: int, backend: str, port: int, timeout: float, payload: bytes, results) -> None:
    """One rank: join the process group, call ``fn``, send back ``(rank, ok, pickled result or traceback)``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    loopback = _loopback_interface()
    if backend == "gloo" and loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback  # keep gloo's peer connections on 127.0.0.1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # ranks share the cores
    try:
        fn, args = pickle.loads(payload)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        wait = datetime.timedelta(seconds=timeout)
        store = dist.TCPStore("127.0.0.1", port, world_size, False, wait)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=wait)
        message = (rank, True, pickle.dumps(fn(rank, world_size, *args)))
    except BaseException:  # report everything, KeyboardInterrupt included; the parent decides
        message = (rank, False, traceback.format_exc())
    results.put(message)
    results.close()
    results.join_thread()  # the message is in the pipe
    if dist.is_initialized():
        if message[1]:
            # Leave together: a rank that exits while a peer is still connecting (or still using
            # it in a collective) makes that peer fail. A failed rank just goes.
            dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of torch (seconds per process, and the parent waits for it).
    os._exit(0 if message[1] else 1)
