"""Shared-memory transport of the process executor: a bounded ring of slots for tensors.

The model process writes a trial's large tensors and arrays (decoded audio, codes, mask)
into one slot of a ring of :class:`multiprocessing.shared_memory.SharedMemory` segments
and sends only the rest (a small pickle whose large arrays are references into the slot)
through a pipe. The measuring process copies them out (:func:`load`); the slot is handed
back when that trial is recorded, so the memory in flight is bounded by the ring.

A slot's segment is created on first use, sized for what it must hold, and replaced by
a larger one when a later trial does not fit (its name changes; the reader attaches to
the new name). Tensors on a GPU are copied to the CPU on the way: the measuring process
never touches a GPU.
"""

from __future__ import annotations

import io
import pickle
import threading
from multiprocessing import shared_memory

import cloudpickle   # (an MLflow dependency) classes of a script's __main__ travel by value
import numpy as np

#: Arrays from this size (bytes) travel in the slot; smaller ones inside the pickle.
INLINE_LIMIT = 16 * 1024
_ALIGN = 64


def _as_numpy(obj):
    """``(array, kind)`` for a tensor or array that can travel as raw bytes, else None."""
    if isinstance(obj, np.ndarray):
        return (obj, "numpy") if not obj.dtype.hasobject else None
    torch = _torch()
    if torch is not None and isinstance(obj, torch.Tensor):
        if obj.requires_grad or obj.is_sparse or obj.dtype == torch.bfloat16:
            return None
        return obj.detach().cpu().contiguous().numpy(), "torch"
    return None


def _torch():
    import sys

    return sys.modules.get("torch")


class _Pickler(cloudpickle.Pickler):
    """Pickles ``obj`` with its large arrays set aside (``to_slot``) or, for tensors on a
    GPU, copied to the CPU inline (``to_slot=None``)."""

    def __init__(self, file, to_slot: list | None):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.to_slot = to_slot

    def persistent_id(self, obj):
        if not isinstance(obj, np.ndarray) and type(obj).__name__ not in ("Tensor", "Parameter"):
            return None
        found = _as_numpy(obj)
        if found is None:
            return None
        array, kind = found
        if self.to_slot is not None and array.nbytes >= INLINE_LIMIT:
            self.to_slot.append(array)
            return ("slot", len(self.to_slot) - 1, kind)
        if kind == "torch" and obj.device.type != "cpu":
            return ("inline", array, kind)
        return None


def dumps(obj, to_slot: list | None = None) -> bytes:
    """Pickle ``obj``; large arrays go to ``to_slot`` (a list) when given."""
    buf = io.BytesIO()
    _Pickler(buf, to_slot).dump(obj)
    return buf.getvalue()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, arrays: list):
        super().__init__(file)
        self.arrays = arrays

    def persistent_load(self, pid):
        where, value, kind = pid
        array = self.arrays[value] if where == "slot" else value
        if kind == "torch":
            import torch

            return torch.from_numpy(array)
        return array


def loads(data: bytes, arrays: list | None = None):
    """Unpickle what :func:`dumps` made; ``arrays`` are the set-aside arrays, in order."""
    return _Unpickler(io.BytesIO(data), arrays or []).load()


def _layout(arrays: list) -> tuple[list, int]:
    """``[(offset, dtype, shape)]`` of each array in a slot and the bytes it needs."""
    layout, offset = [], 0
    for a in arrays:
        layout.append((offset, a.dtype.str, tuple(a.shape)))
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    return layout, offset


class SlotRing:
    """The writer's side: ``slots`` shared-memory slots, each busy until released.

    :meth:`acquire` waits for a free slot (the model loop's only wait); :meth:`put` writes
    a trial's arrays into it; :meth:`release` frees it (the trial is recorded).
    """

    def __init__(self, slots: int):
        self.segments: list[shared_memory.SharedMemory | None] = [None] * slots
        self.free = list(range(slots))
        self.cv = threading.Condition()

    def acquire(self, should_stop) -> int:
        """A free slot; waits while none is. ``should_stop()`` raising ends the wait."""
        with self.cv:
            while not self.free:
                should_stop()
                self.cv.wait(0.2)
            should_stop()
            return self.free.pop(0)

    def release(self, slot: int) -> None:
        with self.cv:
            if slot not in self.free:
                self.free.append(slot)
            self.cv.notify_all()

    def put(self, slot: int, arrays: list) -> tuple[str, list]:
        """Write ``arrays`` into ``slot``: ``(segment name, layout)`` for the reader."""
        layout, size = _layout(arrays)
        shm = self.segments[slot]
        if shm is None or shm.size < size:
            if shm is not None:
                shm.close()
                shm.unlink()
            shm = self.segments[slot] = shared_memory.SharedMemory(
                create=True, size=max(int(size * 1.25), 4096))
        for a, (offset, dtype, shape) in zip(arrays, layout):
            np.ndarray(shape, dtype, buffer=shm.buf, offset=offset)[...] = a
        return shm.name, layout

    def close(self) -> None:
        """Remove every segment (idempotent)."""
        for i, shm in enumerate(self.segments):
            if shm is not None:
                shm.close()
                try:
                    shm.unlink()
                except FileNotFoundError:
                    pass
                self.segments[i] = None


class SlotReader:
    """The reader's side: attaches to segments by name, copies arrays out."""

    def __init__(self):
        self.attached: dict[int, shared_memory.SharedMemory] = {}

    def read(self, slot: int, name: str, layout: list) -> list:
        shm = self.attached.get(slot)
        if shm is None or shm.name != name:
            if shm is not None:
                shm.close()
            shm = self.attached[slot] = shared_memory.SharedMemory(name=name)
        return [np.ndarray(shape, dtype, buffer=shm.buf, offset=offset).copy()
                for offset, dtype, shape in layout]

    def close(self) -> None:
        for shm in self.attached.values():
            shm.close()
        self.attached.clear()
