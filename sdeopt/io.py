"""Files that say when they are damaged: netCDF with checksums and a content digest, zarr with crc32c.

A netCDF file written by ``save`` carries three guards:

- a trailer after the HDF5 image: ``blake2b-256`` of every byte before it. ``load`` checks it
  before HDF5 reads a byte, because HDF5 can hang or misread when its metadata is damaged (a
  64-byte hole in a chunk index made ``nc_open`` loop forever). HDF5 ignores bytes past the end
  of its image; a tool that rewrites the file drops the trailer, and ``load`` then refuses it;
- HDF5's ``fletcher32`` filter on every variable (data and coordinates), so that any netCDF
  reader, not only ``load``, fails on a damaged data chunk;
- ``sdeopt_digest``, a global attribute: ``blake2b-256`` over a canonical serialisation of the
  decoded dataset (see ``digest``), checked after decoding; it covers what ``fletcher32`` does
  not (attributes such as ``config`` or ``lr``, the heap holding the ``model`` strings).

``load`` refuses, with a ``ValueError`` naming the file, any file that is unreadable, damaged, or
foreign (not written by ``save``). A zarr store gets a crc32c codec on every chunk
(``zarr_encoding``) and ``load_zarr`` refuses a store with a damaged chunk. See docs/schema.md,
"Files and checksums".

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import sdeopt as so
    >>> opt = so.discrete.DSGD(lr=0.1, n_workers=2, noise=so.noise.Gaussian(1.0))
    >>> ds = so.discrete.simulate(opt, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0],
    ...                           n_steps=10, n_runs=100).to_dataset()
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     so.io.save(ds, Path(tmp) / "run.nc")
    ...     back = so.io.load(Path(tmp) / "run.nc")  # a ValueError if damaged or foreign
    >>> back.identical(ds)
    True
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

#: The global attribute holding the content digest.
DIGEST_ATTR = "sdeopt_digest"
#: The digest's algorithm, written before the hex digest so that a later scheme can be told apart.
DIGEST_SCHEME = "blake2b-256"
#: The file trailer: this prefix, 64 hex digits of blake2b-256 over every byte before it, a newline.
TRAILER_PREFIX = b"\nsdeopt-file-checksum blake2b-256:"
TRAILER_SIZE = len(TRAILER_PREFIX) + 64 + 1
#: The first bytes of a netCDF-4 (HDF5) and of a netCDF-3 file.
MAGIC = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02", b"CDF\x05")


def digest(ds) -> str:
    """``"blake2b-256:<hex>"`` over a canonical serialisation of the dataset's content.

    Serialised, each as length-prefixed fields: the sorted dimension sizes; for every variable in
    name order its name, whether it is a coordinate, dims, shape, dtype and values (strings as
    UTF-8, numbers little-endian, NaNs as one NaN) and its attributes; then the global attributes
    except ``sdeopt_digest``. An attribute is serialised by its value, flattened to 1-d, so the
    types a netCDF round trip changes (a Python int read back as ``numpy.int64``, a one-element
    list read back as a scalar) digest the same. Encodings (chunks, filters, fill values) are not
    content and are left out.
    """
    h = hashlib.blake2b(digest_size=32)
    _field(h, b"sdeopt-dataset-1")
    for dim, size in sorted((str(d), int(n)) for d, n in ds.sizes.items()):
        _field(h, b"dim", dim.encode(), struct.pack("<q", size))
    coords = set(ds.coords)
    for name in sorted(ds.variables, key=str):
        var = ds.variables[name]
        _field(
            h,
            b"var",
            str(name).encode(),
            b"coord" if name in coords else b"data",
            ",".join(map(str, var.dims)).encode(),
            struct.pack(f"<{var.ndim}q", *var.shape),
        )
        _array(h, np.asarray(var.values))
        _attrs(h, var.attrs)
    _field(h, b"global")
    _attrs(h, {k: v for k, v in ds.attrs.items() if k != DIGEST_ATTR})
    return f"{DIGEST_SCHEME}:{h.hexdigest()}"


def save(ds, path: str | Path) -> None:
    """Write ``ds`` to netCDF-4 with ``fletcher32`` on every variable, its digest and the file checksum.

    The file is written beside ``path``, sealed with its trailer, read back with ``load``, then
    renamed over ``path`` (an existing file is replaced, as ``to_netcdf`` does): a crash never
    leaves half a file, and a dataset whose content a netCDF round trip would change (an
    attribute type netCDF cannot hold exactly) is refused with a ``ValueError``, not written.

    Args:
        ds: an ``xarray.Dataset``; not modified. Its variables' encodings are replaced by
            ``{"fletcher32": True}`` (which makes every variable chunked), 0-d variables aside.
        path: the netCDF file.
    """
    path = Path(path)
    ds = ds.copy(deep=False)
    ds.attrs = {**ds.attrs, DIGEST_ATTR: digest(ds)}
    # HDF5 cannot chunk a scalar dataspace, so 0-d variables go unfiltered (the digest covers them).
    encoding = {
        name: ({"fletcher32": True} if var.ndim else {}) for name, var in ds.variables.items()
    }
    tmp = path.with_name(f".{path.name}.writing-{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        with open(tmp, "r+b") as f:
            checksum = _file_checksum(f, tmp.stat().st_size)
            f.seek(0, os.SEEK_END)
            f.write(TRAILER_PREFIX + checksum.encode() + b"\n")
        try:
            _load(tmp, shown=path)
        except ValueError as exc:  # e.g. bytes attributes, or strings holding NUL characters
            raise ValueError(
                f"{exc} when read back after writing: this dataset cannot be stored losslessly in "
                "netCDF"
            ) from None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | Path):
    """Read a netCDF file written by ``save``, fully into memory, after checking it.

    Checked in this order: the file checksum in its trailer, before HDF5 reads the file; then,
    while reading, ``fletcher32`` on every chunk; then the content digest of what was decoded.

    Returns:
        the ``xarray.Dataset``, with the digest moved from its attrs to
        ``ds.encoding["sdeopt_digest"]``, so that ``load`` after ``save`` is identical to the input.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file, when it is not a netCDF file or not readable (any reader
            error, a ``fletcher32`` mismatch among them), was not written by ``save`` (no
            trailer: a foreign file, or one rewritten by another tool), or its bytes or decoded
            content do not match its checksum or digest (damaged).
    """
    return _load(Path(path), shown=path)


def _load(path: Path, shown):
    """``load``, its messages naming ``shown`` (``save`` checks a temporary file under the final name)."""
    import xarray as xr

    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    where = f"Invalid dataset: {str(shown)!r}"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            f.seek(max(size - TRAILER_SIZE, 0))
            trailer = f.read()
            sealed = (
                size >= TRAILER_SIZE + 8
                and trailer.startswith(TRAILER_PREFIX)
                and trailer.endswith(b"\n")
            )
            matches = sealed and _file_checksum(f, size - TRAILER_SIZE) == trailer[
                len(TRAILER_PREFIX) : -1
            ].decode("ascii", "replace")
    except OSError as exc:  # a folder, no permission: not a file to read
        raise ValueError(f"{where} is not a readable netCDF dataset ({_one_line(exc)})") from exc
    if not head.startswith(MAGIC):
        raise ValueError(
            f"{where} is not a readable netCDF dataset (it does not start as a netCDF or HDF5 file)"
        )
    if not sealed:
        raise ValueError(
            f"{where} was not written by sdeopt (it does not end in the checksum sdeopt.io.save "
            "writes), or was modified since"
        )
    if not matches:
        raise ValueError(f"{where} is corrupted (its bytes do not match the checksum at its end)")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except (
        Exception
    ) as exc:  # HDF5, netCDF or decoding errors: all mean a file that cannot be trusted
        raise ValueError(f"{where} is not a readable netCDF dataset ({_one_line(exc)})") from exc
    stored = ds.attrs.pop(DIGEST_ATTR, None)
    if stored is None:
        raise ValueError(f"{where} was not written by sdeopt (it has no {DIGEST_ATTR} attribute)")
    try:
        actual = digest(ds)
    except Exception as exc:  # attributes that decode to values no dataset written by save holds
        raise ValueError(f"{where} is corrupted ({_one_line(exc)})") from exc
    if stored != actual:
        raise ValueError(f"{where} is corrupted (its content does not match its {DIGEST_ATTR})")
    ds.encoding[DIGEST_ATTR] = stored
    return ds


def zarr_encoding(ds, *, zarr_format: int = 3) -> dict:
    """Per-variable encodings for ``ds.to_zarr(..., encoding=zarr_encoding(ds))``: a crc32c per chunk.

    Zarr format 3 (what xarray writes by default with zarr 3): the default compressor (Zstd)
    followed by ``zarr.codecs.Crc32cCodec``, so each stored chunk ends with the crc32c of its
    compressed bytes and a damaged chunk raises on read. Zarr format 2: numcodecs' ``CRC32C`` as a
    filter before the default compressor (its checksum covers the uncompressed bytes).

    Pass the encoding when the store is created (e.g. the ``compute=False`` template of a sweep);
    later ``to_zarr(region=...)`` or appending writes take the codecs from the store and must not
    pass it again. A chunk that was never written reads as the fill value: the checksum cannot
    tell a missing chunk from an unwritten one.
    """
    if zarr_format == 3:
        from zarr.codecs import Crc32cCodec, ZstdCodec

        return {name: {"compressors": (ZstdCodec(), Crc32cCodec())} for name in ds.variables}
    if zarr_format == 2:
        from numcodecs import CRC32C, Zstd

        return {
            name: {"compressors": (Zstd(level=0),), "filters": (CRC32C(),)} for name in ds.variables
        }
    raise ValueError(f"Invalid zarr_format: {zarr_format!r} (2 or 3)")


def load_zarr(path: str | Path, **kwargs):
    """Open a zarr store and load it into memory; a damaged chunk is a ``ValueError`` naming the store.

    ``kwargs`` go to ``xarray.open_zarr`` (e.g. ``consolidated=False``).

    Raises:
        FileNotFoundError: ``path`` is a local path that does not exist.
        ValueError: the store cannot be opened or a chunk fails its checksum or decoding.
    """
    import xarray as xr

    if "://" not in str(path) and not Path(path).exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    try:
        return xr.open_zarr(path, **kwargs).load()
    except Exception as exc:  # checksum mismatch, undecodable chunk, unreadable metadata
        raise ValueError(
            f"Invalid dataset: {str(path)!r} is not a readable zarr store ({_one_line(exc)})"
        ) from exc


def _file_checksum(f, size: int) -> str:
    """blake2b-256 hex digest of the first ``size`` bytes of the open binary file ``f``."""
    h = hashlib.blake2b(digest_size=32)
    f.seek(0)
    left = size
    while left > 0:
        block = f.read(min(left, 1 << 20))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def _field(h, *parts: bytes) -> None:
    """Length-prefixed parts, so that no two different sequences serialise alike."""
    for part in parts:
        h.update(struct.pack("<Q", len(part)))
        h.update(part)


def _array(h, a: np.ndarray) -> None:
    if a.dtype.kind in "UO":
        items = a.ravel().tolist()
        if not all(isinstance(s, str) for s in items):
            raise TypeError(
                f"object array holds {type(next(s for s in items if not isinstance(s, str))).__name__}"
            )
        _field(h, b"str", *(s.encode("utf-8", "surrogatepass") for s in items))
    elif a.dtype.kind == "S":
        _field(h, b"bytes", *a.ravel().tolist())
    else:
        if a.dtype.kind in "fc":
            a = np.where(np.isnan(a), np.array(np.nan, dtype=a.dtype), a)
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        _field(h, a.dtype.str.encode(), a.tobytes())


def _attrs(h, attrs: dict) -> None:
    for key in sorted(attrs, key=str):
        value = attrs[key]
        if isinstance(value, str):  # a str subclass (torch's TorchVersion) reads back as str
            value = str(value)
        _field(h, b"attr", str(key).encode())
        if isinstance(value, bytes):
            _field(h, b"bytes", value)
        else:
            _array(h, np.atleast_1d(np.asarray(value)).ravel())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


#: Attribute of a store written with ``out=``: 1 once every chunk of runs is in it.
COMPLETE = "sdeopt_complete"


def open_stream(path: str | Path):
    """Open a store written with ``out=`` (``simulate``, ``solve``, ``compare``) lazily; a store that
    an interrupted run left incomplete, or one not written that way, is a ``ValueError`` naming it.
    Each chunk's crc32c is checked when it is read."""
    import xarray as xr

    try:
        ds = xr.open_zarr(path, consolidated=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"Invalid out: {str(path)!r} is not a readable zarr store ({_one_line(exc)})"
        ) from None
    if ds.attrs.get(COMPLETE) != 1:
        raise ValueError(
            f"Invalid out: {str(path)!r} is incomplete (the run that wrote it was interrupted, "
            "or it was not written by sdeopt's out=)"
        )
    return ds
