"""Files with checksums: netCDF written by sdeopt.io.save is refused by load when damaged or foreign;
zarr chunks carry a crc32c (issue 12, item 5)."""

from __future__ import annotations

import hashlib
import warnings

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr

import sdeopt as so
from sdeopt import io
from sdeopt.cli import main

#: 64-byte holes at 41 evenly spread offsets, plus the very start and end of the file.
BLOCK = 64


def _dataset(**kw) -> xr.Dataset:
    opt = so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian(scale=1.0))
    return so.analysis.compare(
        opt,
        so.problems.Quadratic(diag=[1.0, 2.0]),
        [1.0, 1.0],
        n_steps=20,
        n_runs=200,
        models=["first_order"],
        record_x=True,
        **kw,
    )


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    return _dataset()


def _offsets(size: int) -> list[int]:
    spread = [round(i * (size - BLOCK) / 40) for i in range(41)]
    return sorted(set([*spread, 0, 8, 16, 32, size - 2 * BLOCK, size - BLOCK]))


def _battery(path, read, expected, *, named: bool) -> dict[str, list[int]]:
    """Zero a 64-byte block at each offset of a copy of ``path``; classify what ``read`` makes of it.

    ``named``: every refusal must be a ValueError naming the file (``io.load``); otherwise any
    exception of the plain reader counts as a refusal.
    """
    data = path.read_bytes()
    copy = path.with_name("damaged.nc")
    seen = {"refused": [], "identical": [], "altered": []}
    for offset in _offsets(len(data)):
        damaged = bytearray(data)
        damaged[offset : offset + BLOCK] = bytes(BLOCK)
        copy.write_bytes(bytes(damaged))
        try:
            ds = read(copy)
        except Exception as exc:
            assert not named or (isinstance(exc, ValueError) and repr(str(copy)) in str(exc)), exc
            seen["refused"].append(offset)
            continue
        seen["identical" if ds.identical(expected) else "altered"].append(offset)
    return seen


def _seal(path) -> None:
    """Append the trailer save writes (blake2b-256 of every byte before it): what a forger would do."""
    data = path.read_bytes()
    path.write_bytes(
        data
        + io.TRAILER_PREFIX
        + hashlib.blake2b(data, digest_size=32).hexdigest().encode()
        + b"\n"
    )


@pytest.mark.parametrize("kind", ["float64", "float32", "big_seed"])
def test_save_load_round_trip(tmp_path, small, kind):
    ds = {
        "float64": lambda: small,
        "float32": lambda: _dataset(dtype=torch.float32),
        "big_seed": lambda: _dataset(seed=2**70),
    }[kind]()
    path = tmp_path / "run.nc"
    io.save(ds, path)
    back = io.load(path)
    xr.testing.assert_identical(back, ds)
    # identical does not compare dtypes: strings, bools, int64 and float32 must survive too
    assert {n: back[n].dtype for n in ds.variables} == {n: ds[n].dtype for n in ds.variables}
    assert io.DIGEST_ATTR not in ds.attrs  # save leaves its argument alone
    assert back.encoding[io.DIGEST_ATTR] == io.digest(ds)
    if kind == "big_seed":
        assert back.attrs["seed"] == str(2**70) and int(back.attrs["seed"]) == 2**70
    with netCDF4.Dataset(path) as nc:
        assert nc.getncattr(io.DIGEST_ATTR) == io.digest(ds)
        assert all(v.filters()["fletcher32"] for v in nc.variables.values())
    assert (
        path.read_bytes().endswith(b"\n")
        and io.TRAILER_PREFIX in path.read_bytes()[-io.TRAILER_SIZE :]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary file left


def test_digest_sees_every_part_of_the_content(small):
    base = io.digest(small)
    changed = [
        small.assign_attrs(lr=0.2),
        small.assign_attrs(extra=1),
        small.assign(loss=small["loss"] + 1e-12),
        small.assign_coords(model=["discrete", "second_order"]),
        small.assign(diverged=~small["diverged"]),
        small.rename({"grad_norm": "gnorm"}),
        small.reset_coords("time"),
        small.assign(blowup_step=small["blowup_step"].astype(np.int32)),
    ]
    small["time"].attrs["units"] = "other"
    try:
        changed.append(small.copy(deep=True))
    finally:
        small["time"].attrs["units"] = "optimizer steps x lr"
    assert io.digest(small) == base and io.digest(small.copy(deep=True)) == base
    assert len({io.digest(d) for d in changed} | {base}) == len(changed) + 1


def test_damaged_files_are_refused_never_read_altered(tmp_path, small):
    """Issue 12, item 5: zeroed 64-byte blocks were plotted silently; now each is refused or harmless."""
    plain = tmp_path / "plain" / "run.nc"
    plain.parent.mkdir()
    small.to_netcdf(plain)
    before = _battery(plain, xr.load_dataset, xr.load_dataset(plain), named=False)
    sealed = tmp_path / "sealed" / "run.nc"
    sealed.parent.mkdir()
    io.save(small, sealed)
    after = _battery(sealed, io.load, small, named=True)
    counts = {k: (len(before[k]), len(after[k])) for k in before}
    print(f"\n(before, after) over {len(_offsets(sealed.stat().st_size))} holes: {counts}")
    assert (
        len(before["altered"]) >= 10
    )  # the bug: plain to_netcdf + load_dataset read altered values
    assert after["altered"] == []
    # A hole is harmless only where the bytes were zero already: any real change is refused.
    data = sealed.read_bytes()
    assert all(not any(data[o : o + BLOCK]) for o in after["identical"])
    assert len(after["refused"]) >= len(_offsets(len(data))) - 8


def test_inner_checks_catch_damage_under_a_forged_trailer(tmp_path, small):
    """Behind the trailer, fletcher32 guards the data chunks (for every netCDF reader) and the digest
    guards the attributes, which netCDF readers otherwise return as written or as altered."""
    path = tmp_path / "run.nc"
    io.save(small, path)
    image = path.read_bytes()[: -io.TRAILER_SIZE]
    at = image.find(small["x"].values.tobytes()[:256])
    assert at > 0
    chunk = tmp_path / "chunk.nc"
    chunk.write_bytes(image[: at + 512] + bytes(BLOCK) + image[at + 512 + BLOCK :])
    _seal(chunk)
    with pytest.raises(ValueError, match=r"chunk\.nc' is not a readable netCDF dataset"):
        io.load(chunk)
    with pytest.raises(
        RuntimeError, match="HDF error"
    ):  # fletcher32 makes the plain reader fail too
        xr.load_dataset(chunk)
    attr = tmp_path / "attr.nc"
    attr.write_bytes(image)
    with netCDF4.Dataset(attr, "a") as nc:
        nc.setncattr("lr", 0.2)
    _seal(attr)
    assert xr.load_dataset(attr).attrs["lr"] == 0.2  # read without a word by a plain reader
    with pytest.raises(
        ValueError, match=r"attr\.nc' is corrupted \(its content does not match its sdeopt_digest"
    ):
        io.load(attr)


def test_foreign_and_unsealed_files_are_refused(tmp_path, small, capsys):
    foreign = tmp_path / "foreign.nc"
    small[["loss", "diverged", "blowup_step"]].to_netcdf(foreign)
    with pytest.raises(ValueError, match=r"foreign\.nc' was not written by sdeopt"):
        io.load(foreign)
    assert main(["plot", str(foreign), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdeopt: ") and len(err.strip().splitlines()) == 1 and str(foreign) in err
    assert "not written by sdeopt" in err and not any((tmp_path / "figs").glob("*.png"))
    # A file of sdeopt's that another tool rewrote loses its trailer: refused, not trusted.
    edited = tmp_path / "edited.nc"
    io.save(small, edited)
    with netCDF4.Dataset(edited, "a") as nc:
        nc.setncattr("note", "edited")
    with pytest.raises(ValueError, match="not written by sdeopt"):
        io.load(edited)
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.nc")


def test_lossy_datasets_are_refused_by_save(tmp_path):
    ds = xr.Dataset({"v": ("t", np.arange(3.0))}, attrs={"blob": b"\x00\x01"})
    with pytest.raises(ValueError, match=r"out\.nc' .* cannot be stored losslessly"):
        io.save(ds, tmp_path / "out.nc")
    assert list(tmp_path.iterdir()) == []


def test_run_and_plot_write_and_read_checked_files(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[defaults]\nproblem = { type = "Quadratic", diag = [1.0, 2.0] }\n'
        'noise = { type = "Gaussian", scale = 1.0 }\nx0 = [1.0, -1.0]\nn_steps = 10\nn_runs = 20\n'
        '[[runs]]\nname = "dsgd"\nmethod = { type = "DSGD", lr = 0.1 }\nmodels = ["first_order"]\n'
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 0
    path = tmp_path / "out" / "dsgd.nc"
    assert io.load(path).attrs["claim"] == ""
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    path.write_bytes(bytes(damaged))
    capsys.readouterr()
    assert main(["plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{str(path)!r} is corrupted" in err


@pytest.mark.parametrize("zarr_format", [None, 2])
def test_zarr_chunks_carry_a_crc32c(tmp_path, small, zarr_format):
    """A store created with zarr_encoding (xarray's default format, 3, and format 2), filled by region
    writes as a sweep does; one altered byte in one chunk file is an error on read."""
    store = tmp_path / "store.zarr"
    template = small.copy()
    for name in small.data_vars:
        template[name] = xr.zeros_like(small[name]).chunk({"run": 100})
    encoding = (
        io.zarr_encoding(small)
        if zarr_format is None
        else io.zarr_encoding(small, zarr_format=zarr_format)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes on string dtypes and consolidated metadata
        template.to_zarr(
            store,
            mode="w-",
            compute=False,
            consolidated=False,
            encoding=encoding,
            **({} if zarr_format is None else {"zarr_format": zarr_format}),
        )
        for lo in (0, 100):
            part = small.isel(run=slice(lo, lo + 100)).drop_vars(
                ["model", "step", "coord", "time", "lr_sum"]
            )
            part.attrs = {}
            part.to_zarr(store, region={"run": slice(lo, lo + 100)}, consolidated=False)
        xr.testing.assert_equal(io.load_zarr(store, consolidated=False), small)
        chunks = sorted(
            p
            for p in (store / "x").rglob("*")
            if p.is_file() and not p.name.startswith((".", "zarr"))
        )
        assert len(chunks) == 2
        damaged = bytearray(chunks[1].read_bytes())
        damaged[len(damaged) // 2] ^= 1
        chunks[1].write_bytes(bytes(damaged))
        with pytest.raises(Exception, match="checksum"):
            xr.open_zarr(store, consolidated=False).load()
        with pytest.raises(
            ValueError, match=r"store\.zarr' is not a readable zarr store \(.*checksum"
        ):
            io.load_zarr(store, consolidated=False)
    with pytest.raises(ValueError, match="zarr_format"):
        io.zarr_encoding(small, zarr_format=1)
