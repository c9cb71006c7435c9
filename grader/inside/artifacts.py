"""Records of the public tests' *produce* half, on disk, as plain data.

A record (see ``test_utils.py``) is a dict of JSON values in which NumPy arrays may
stand anywhere. On disk it is two files:

    <stem>.json   the record, each array replaced by {"__array__": "a<N>"}
    <stem>.npz    the arrays, by those names (NumPy's format, read without pickle)

`dump()` runs where the student's code runs. `load()` runs where the grade is
decided: it treats both files as hostile. Each file has a size limit, the JSON is
parsed as data only, each array's header (dtype, shape) is checked before its
data is read (plain numbers only, no pickle, no more bytes than the file holds),
and any fault becomes `RecordError` with a message for the feedback.
This module imports only the standard library and NumPy, so that the student's
sandbox can run `dump()` without anything of the grader.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

MAX_JSON_BYTES = 8 * 2**20
MAX_NPZ_BYTES = 96 * 2**20
MAX_ARRAYS = 4096
# The bytes all the arrays of one record may declare (unpacked): the record's file limit.
MAX_ARRAY_BYTES = MAX_NPZ_BYTES
ARRAY_KEY = "__array__"


class RecordError(ValueError):
    """A record that cannot be read: missing, too large or malformed."""


def dump(record, stem: str) -> None:
    """Write ``record`` as ``<stem>.json`` and ``<stem>.npz`` (the JSON last: it marks done)."""
    arrays = {}

    def strip(value):
        if isinstance(value, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {ARRAY_KEY: name}
        if isinstance(value, dict):
            return {str(k): strip(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        return value

    text = json.dumps(strip(record), default=str)
    np.savez(f"{stem}.npz", **arrays)
    with open(f"{stem}.json.part", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(f"{stem}.json.part", f"{stem}.json")


def read_arrays(npz_path: str) -> dict:
    """Read the arrays of a record's ``.npz``, checking what each declares before reading it.

    Each member's header (dtype and shape) is read first: an array that is not plain
    numbers, declares more bytes than its member holds, or more than
    ``MAX_ARRAY_BYTES`` in all, is refused before anything is allocated for it.
    """
    if os.path.getsize(npz_path) > MAX_NPZ_BYTES:
        raise RecordError(f"the record's arrays are larger than {MAX_NPZ_BYTES // 2**20} MiB")
    arrays, total = {}, 0
    try:
        with zipfile.ZipFile(npz_path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ARRAYS:
                raise RecordError(f"the record has more than {MAX_ARRAYS} arrays")
            for member in members:
                name = member.filename.removesuffix(".npy")
                if member.file_size > MAX_ARRAY_BYTES:
                    raise RecordError(f"array {name} is larger than {MAX_ARRAY_BYTES // 2**20} MiB")
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                    else:
                        raise RecordError(f"array {name} has an unknown format {version}")
                    if dtype.kind not in "biuf" or dtype.hasobject:
                        raise RecordError(f"array {name} holds {dtype}, not numbers")
                    declared = math.prod(shape) * dtype.itemsize
                    total += declared
                    if declared > member.file_size or total > MAX_ARRAY_BYTES:
                        raise RecordError(
                            f"array {name} declares {declared:,} bytes ({shape}, {dtype}); "
                            f"its file holds {member.file_size:,}"
                        )
                    data = handle.read(declared + 1)
                if len(data) != declared:
                    raise RecordError(f"array {name} holds {len(data):,} bytes, not {declared:,}")
                array = np.frombuffer(data, dtype=dtype)
                order = "F" if fortran else "C"
                arrays[name] = array.reshape(shape, order=order).copy()
    except RecordError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise RecordError(f"the record's arrays cannot be read ({error})") from None
    return arrays


def _no_constants(name):
    raise ValueError(f"{name} is not allowed in a record")


def load(json_bytes: bytes, npz_path: str | None):
    """Read a record from the bytes of its JSON and the path of its arrays; see the module doc."""
    if len(json_bytes) > MAX_JSON_BYTES:
        raise RecordError(f"the record is larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        data = json.loads(json_bytes.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RecordError(f"the record is not valid JSON ({error})") from None
    arrays = read_arrays(npz_path) if npz_path is not None else {}

    def restore(value):
        if isinstance(value, dict):
            if set(value) == {ARRAY_KEY}:
                if value[ARRAY_KEY] not in arrays:
                    raise RecordError(f"the record names a missing array {value[ARRAY_KEY]!r}")
                return arrays[value[ARRAY_KEY]]
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    try:
        record = restore(data)
    except RecursionError:
        raise RecordError("the record is nested too deeply") from None
    if not isinstance(record, dict):
        raise RecordError("the record is not a JSON object")
    return record
