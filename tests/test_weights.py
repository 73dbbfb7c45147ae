"""Weights files (safetensors only, self-describing, checked on load) and the registry of shipped weights."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_refocusgan.core import weights
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focus import SMLParams
from napari_refocusgan.core.networks import Generator, deblur_config, refocus_config
from napari_refocusgan.core.weights import (
    FORMAT,
    default_model,
    file_sha256,
    list_models,
    load_generator,
    register_weights,
    save_generator,
)


def tiny(role: str = "deblur", seed: int = 0, **overrides) -> Generator:
    torch.manual_seed(seed)
    cfg = (
        deblur_config(ngf=4, n_blocks=1, **overrides)
        if role == "deblur"
        else refocus_config(ngf=4, n_blocks=1, **overrides)
    )
    return Generator(cfg)


@pytest.fixture
def g1_file(tmp_path):
    path = tmp_path / "g1.safetensors"
    save_generator(tiny("deblur"), path, "deblur", {"steps": 12, "data": "synthetic"}, sml_params=SMLParams(window=5))
    return path


def test_roundtrip_keeps_weights_config_and_model_card(tmp_path):
    model = tiny("refocus", seed=3)
    path = tmp_path / "g2.safetensors"
    digest = save_generator(model, path, "refocus", {"steps": 7, "config": "cpu-preset"})
    assert digest == file_sha256(path)
    loaded = load_generator(path)
    assert loaded.role == "refocus" and loaded.config == model.cfg
    assert not loaded.generator.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[key], value), key
    assert loaded.metadata["format"] == FORMAT
    assert loaded.metadata["steps"] == "7"
    # a model-card key that collides with a reserved one is kept under another name, not lost
    assert loaded.metadata["training_config"] == "cpu-preset"
    assert json.loads(loaded.metadata["config"])["ngf"] == 4
    x = torch.rand(1, 6, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.generator(x, 2.0), model.eval()(x, 2.0), atol=1e-6, rtol=0)


def test_the_same_weights_exported_twice_are_the_same_bytes(tmp_path):
    # the registry pins a sha256, so an export must not depend on the order a hash map gave the model card
    card = {f"key_{i:02d}": f"value {i}" for i in range(24)} | {"command": "python -m training train −δ"}
    model = tiny("deblur", seed=5)
    digests = [save_generator(model, tmp_path / f"g1_{i}.safetensors", "deblur", card) for i in range(4)]
    assert len(set(digests)) == 1
    loaded = load_generator(tmp_path / "g1_0.safetensors")
    assert loaded.metadata["key_07"] == "value 7" and loaded.metadata["command"].endswith("−δ")


def test_sml_params_travel_with_the_file(g1_file):
    assert load_generator(g1_file).sml == SMLParams(window=5)


def test_save_refuses_a_role_that_contradicts_the_network(tmp_path):
    with pytest.raises(RefocusError, match="cannot be saved as 'deblur'"):
        save_generator(tiny("refocus"), tmp_path / "x.safetensors", "deblur")
    with pytest.raises(RefocusError, match="role must be one of"):
        save_generator(tiny("deblur"), tmp_path / "x.safetensors", "denoise")


def test_role_is_enforced_on_load(g1_file):
    with pytest.raises(RefocusError, match="holds a deblur generator; a refocus generator is needed"):
        load_generator(g1_file, role="refocus")


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickles_are_refused_and_never_unpickled(tmp_path, zipfile):
    marker = tmp_path / "unpickled"

    class Trap:  # unpickling this creates ``marker``
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "weights.safetensors"  # the name does not matter, the content does
    if zipfile:
        torch.save({"trap": Trap()}, path)
    else:
        path.write_bytes(pickle.dumps(Trap(), protocol=2))
    with pytest.raises(RefocusError, match="only safetensors are accepted; we never unpickle"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 4, b"not a weights file at all, just text", bytes(range(256)) * 10])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(RefocusError, match="not a safetensors file"):
        load_generator(path)


def test_truncated_file_is_refused(tmp_path, g1_file):
    data = g1_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])  # header intact, tensor data short
    with pytest.raises(RefocusError, match="corrupt or truncated"):
        load_generator(cut)


def _resave(src, dst, mutate_tensors=None, mutate_meta=None):
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_meta:
        mutate_meta(meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_missing_unexpected_and_misshapen_tensors_are_listed(tmp_path, g1_file):
    def mutate(t):
        del t["tail.1.bias"]
        t["extra.weight"] = torch.zeros(2)
        t["head.1.weight"] = torch.zeros(4, 4, 3, 3)

    bad = _resave(g1_file, tmp_path / "bad.safetensors", mutate)
    with pytest.raises(RefocusError) as err:
        load_generator(bad)
    msg = str(err.value)
    assert "missing 1: tail.1.bias" in msg
    assert "unexpected 1: extra.weight" in msg
    assert "head.1.weight (4, 4, 3, 3) ≠ (4, 4, 7, 7)" in msg


def test_config_that_does_not_fit_the_tensors_is_refused(tmp_path, g1_file):
    def widen(meta):
        cfg = json.loads(meta["config"])
        cfg["ngf"] = 8
        meta["config"] = json.dumps(cfg)

    bad = _resave(g1_file, tmp_path / "bad.safetensors", mutate_meta=widen)
    with pytest.raises(RefocusError, match="wrong shape"):
        load_generator(bad)


def test_foreign_safetensors_and_bad_metadata_are_refused(tmp_path, g1_file):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(RefocusError, match="not napari-refocusgan weights"):
        load_generator(foreign)
    bad = _resave(g1_file, tmp_path / "bad.safetensors", mutate_meta=lambda m: m.update(config="{not json"))
    with pytest.raises(RefocusError, match="unreadable model description"):
        load_generator(bad)


def test_a_config_asking_for_a_huge_network_is_refused_before_it_is_allocated(tmp_path, g1_file, monkeypatch):
    """A 10 kB file whose config said n_blocks 2000 took 2.6 GB (100 000 filled the memory) before its
    missing keys were reported."""

    def config_with(**changes):
        def mutate(meta):
            meta["config"] = json.dumps({**json.loads(meta["config"]), **changes})

        return mutate

    many = _resave(g1_file, tmp_path / "many.safetensors", mutate_meta=config_with(n_blocks=100_000))
    with pytest.raises(RefocusError, match="100000 residual blocks; a whole number up to 64"):
        load_generator(many)
    text = _resave(g1_file, tmp_path / "text.safetensors", mutate_meta=config_with(n_blocks="6"))
    with pytest.raises(RefocusError, match="'6' residual blocks"):
        load_generator(text)
    built_on = []
    real = weights.Generator

    def recording_generator(cfg):
        built_on.append(torch.empty(0).device.type)  # the default device when the network is built
        return real(cfg)

    monkeypatch.setattr(weights, "Generator", recording_generator)
    wide = _resave(g1_file, tmp_path / "wide.safetensors", mutate_meta=config_with(ngf=100_000, n_blocks=2))
    with pytest.raises(RefocusError, match="does not match its generator config"):
        load_generator(wide)
    assert built_on == ["meta"]  # refused from a skeleton without memory; never allocated for real
    load_generator(g1_file)
    assert built_on == ["meta", "meta", "cpu"]


def test_integer_weights_are_refused(tmp_path, g1_file):
    """int32 tensors loaded as whole numbers: a network whose output equalled its input, without a word."""
    bad = _resave(g1_file, tmp_path / "int.safetensors", lambda t: t.update({k: v.to(torch.int32) for k, v in t.items()}))
    with pytest.raises(RefocusError, match="not floating point"):
        load_generator(bad)


@pytest.mark.parametrize("header_length", [50_000_000, 640])  # first bytes 0x80 0xf0 …; 0x80 0x02 as pickle 2
def test_a_cut_safetensors_file_is_not_called_a_pickle(tmp_path, header_length):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(struct.pack("<Q", header_length) + b'{"a"')
    with pytest.raises(RefocusError, match="not a safetensors file") as err:
        load_generator(cut)
    assert "pickle" not in str(err.value)


def test_nan_weights_are_refused(tmp_path, g1_file):
    bad = _resave(g1_file, tmp_path / "nan.safetensors", lambda t: t["head.1.weight"].view(-1).__setitem__(0, np.nan))
    with pytest.raises(RefocusError, match="NaN/Inf weights in head.1.weight"):
        load_generator(bad)


def test_missing_path_folder_and_unknown_name(tmp_path):
    with pytest.raises(RefocusError, match="no such file and no such registered name"):
        load_generator(tmp_path / "nope.safetensors")
    with pytest.raises(RefocusError, match="is a folder"):
        load_generator(tmp_path)
    with pytest.raises(RefocusError, match="say which weights"):
        load_generator(None)


# --------------------------------------------------------------------------------------------- registry


def test_empty_registry_has_no_default(tmp_path):
    registry = tmp_path / "registry.json"
    registry.write_text("[]")
    with pytest.raises(RefocusError, match=r"no shipped weights for deblur .*pass --weights"):
        default_model("deblur", registry)
    with pytest.raises(RefocusError, match=r"no shipped weights for refocus"):
        load_generator("refocus", registry=registry)
    assert list_models(tmp_path / "absent.json") == []


def test_register_then_load_by_name_role_and_path(tmp_path):
    registry = tmp_path / "weights" / "registry.json"
    registry.parent.mkdir()
    for seed, name in [(1, "g1-old"), (2, "g1-new")]:
        path = registry.parent / f"{name}.safetensors"
        save_generator(tiny("deblur", seed=seed), path, "deblur", {"steps": seed})
        register_weights(path, name=name, metrics={"psnr": 30.0 + seed}, registry=registry)
    g2 = registry.parent / "g2.safetensors"
    save_generator(tiny("refocus"), g2, "refocus")
    register_weights(g2, name="g2", metadata={"config": "cpu", "steps": 5}, registry=registry)  # as training export

    entries = {e.name: e for e in list_models(registry)}
    assert set(entries) == {"g1-old", "g1-new", "g2"}
    raw = json.loads(registry.read_text())
    assert all(not e["file"].startswith("/") for e in raw)  # relative: the package can move
    assert entries["g1-new"].metrics == {"psnr": 32.0} and entries["g1-new"].training["steps"] == "2"
    assert entries["g2"].deltas == tuple(float(d) for d in range(-9, 10))
    assert entries["g2"].training == {"training_config": "cpu", "steps": "5"}
    # the newest registration of a role becomes its default
    assert default_model("deblur", registry).name == "g1-new"
    assert load_generator("deblur", registry=registry).name == "g1-new"
    by_name = load_generator("g1-old", registry=registry)
    reference = tiny("deblur", seed=1).state_dict()
    assert torch.equal(by_name.generator.state_dict()["head.1.weight"], reference["head.1.weight"])
    assert load_generator(None, role="refocus", registry=registry).name == "g2"
    # re-registering a name replaces its entry
    register_weights(registry.parent / "g1-old.safetensors", name="g1-old", registry=registry)
    assert [e.name for e in list_models(registry)].count("g1-old") == 1
    assert default_model("deblur", registry).name == "g1-old"
    # retraining and exporting over a registered file replaces it (its old hash is not held against it)
    save_generator(tiny("deblur", seed=9), registry.parent / "g1-old.safetensors", "deblur", {"steps": 9})
    register_weights(registry.parent / "g1-old.safetensors", name="g1-old", registry=registry)
    assert load_generator("g1-old", registry=registry).metadata["steps"] == "9"


def test_shipped_file_is_checked_against_its_hash(tmp_path):
    registry = tmp_path / "registry.json"
    path = tmp_path / "g1.safetensors"
    save_generator(tiny("deblur"), path, "deblur")
    register_weights(path, name="g1", registry=registry)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the tensor data: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(RefocusError, match="does not match the registry's sha256"):
        load_generator("g1", registry=registry)
    with pytest.raises(RefocusError, match="does not match the registry's sha256"):
        load_generator(path, registry=registry)  # by path too: it is a shipped file
    path.unlink()
    # a file of the user's registry, not of the package: reinstalling would not bring it back
    with pytest.raises(RefocusError, match=r"registered weights 'g1' are missing: .* \(restore the file, or export"):
        load_generator("g1", registry=registry)


def test_corrupt_registry_is_a_clear_error(tmp_path):
    registry = tmp_path / "registry.json"
    registry.write_text("{broken")
    with pytest.raises(RefocusError, match="registry .* is unreadable"):
        list_models(registry)
    registry.write_text('[{"name": "x"}]')
    with pytest.raises(RefocusError, match="bad entry 'x'"):
        list_models(registry)


def test_the_packaged_registry_is_valid_and_its_files_match():
    """The package ships a default G1 and G2, trained by our training code; every entry loads, hash and
    shapes checked, and its model card says how it was trained."""
    entries = list_models()
    assert {e.role for e in entries if e.default} == {"deblur", "refocus"}
    for entry in entries:
        assert entry.path.parent == weights.WEIGHTS_DIR.resolve()
        model = load_generator(entry.name)
        assert model.role == entry.role and model.config == entry.config
        assert int(entry.training["steps"]) > 0 and entry.training["data"]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    with pytest.raises(RefocusError, match="cannot write weights"):
        save_generator(tiny("deblur"), tmp_path / "no" / "such" / "folder" / "g1.safetensors", "deblur")


def test_weights_file_names_the_file_of_a_role_a_registered_name_or_a_path(tmp_path):
    shipped = weights.default_model("deblur").path
    assert weights.weights_file("deblur") == shipped
    assert weights.weights_file("deblur-cpu") == shipped
    own = tmp_path / "own.safetensors"
    own.write_bytes(b"not read")  # only named, never loaded
    assert weights.weights_file(own) == own
    with pytest.raises(RefocusError, match="no such file"):
        weights.weights_file(tmp_path / "missing.safetensors")


def test_an_empty_weights_name_says_so():
    """Path("") is the current folder: the message was "weights . is a folder"."""
    for spec in ("", "  "):
        with pytest.raises(RefocusError, match="weights name or path is empty"):
            load_generator(spec, role="deblur")


def test_read_config_gives_a_files_config_from_its_header(tmp_path):
    """What the Refocus widget reads to fit its δ box when weights are chosen: the file's config, without its
    tensors; files that load_generator refuses for their description are refused alike."""
    from napari_refocusgan.core.networks import Generator, refocus_config
    from napari_refocusgan.core.weights import read_config

    config = refocus_config(deltas=(-4, 4), ngf=4, n_blocks=1)
    path = tmp_path / "g2.safetensors"
    save_generator(Generator(config), path, "refocus")
    assert read_config(path) == config and read_config(path, role="refocus").delta_range == (-4.0, 4.0)
    assert read_config("refocus") == load_generator("refocus").config
    with pytest.raises(RefocusError, match="holds a refocus generator; a deblur generator is needed"):
        read_config(path, role="deblur")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + bytes(64))
    with pytest.raises(RefocusError, match=r"^\S+pickle.safetensors looks like a PyTorch/pickle file.*never unpickle"):
        read_config(tmp_path / "pickle.safetensors")  # said once, not wrapped in "not a readable safetensors file"
