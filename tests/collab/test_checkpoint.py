"""Collab checkpoints and their signed pointers, on the shipped spec's real genesis tensors.

A checkpoint goes into a real ``LocalStore`` and comes back bit-identical (with and without the
outer momentum); its id is a pure function of the parameters; a file that is not exactly the
spec's model in finite fp32 is refused as ``checkpoint_corrupt`` before a tensor is used. A
pointer verifies only for the aggregator that signed it and only unedited, and
``latest_pointer`` picks the newest round among genuine pointers, skipping everything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from crucible.collab.checkpoint import (
    CHECKPOINT_FILE,
    POINTER_KIND,
    CheckpointPointer,
    latest_pointer,
    load_checkpoint_dir,
    publish_pointer,
    store_checkpoint,
    write_checkpoint_dir,
)
from crucible.collab.shared_model import genesis_params, param_shapes
from crucible.competitions import specs_dir
from crucible.protocol.collab import CollabSpec, load_collab_specs
from crucible.protocol.errors import AuthError, PayloadRejected
from crucible.store.documents import DocumentStore
from crucible.store.hashing import content_hash
from crucible.store.local import LocalStore
from tests.conftest import keypair

EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"


@pytest.fixture(scope="module")
def spec() -> CollabSpec:
    return load_collab_specs(specs_dir())["collab"]


@pytest.fixture(scope="module")
def params(spec: CollabSpec) -> dict[str, torch.Tensor]:
    return genesis_params(spec)


@pytest.fixture(scope="module")
def momentum(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(17)
    return {n: torch.randn(t.shape, generator=g) for n, t in params.items()}


def _fetch(store: LocalStore, ckpt: str, dest: Path) -> Path:
    return store.get("local", ckpt, dest, max_bytes=1 << 30, allowed_files={CHECKPOINT_FILE})


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


# ---- write → store → load -----------------------------------------------------------------


def test_checkpoint_round_trips_through_the_store_without_momentum(
    spec: CollabSpec, params, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    ckpt = store_checkpoint(store, params, None, competition=spec.key)
    folder = _fetch(store, ckpt, tmp_path / "got")
    loaded = load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert loaded.momentum is None
    assert list(loaded.params) == sorted(params) and _same(loaded.params, params)
    assert all(t.dtype == torch.float32 for t in loaded.params.values())
    assert content_hash(folder) == ckpt  # the id is the store's content hash of the folder


def test_checkpoint_round_trips_through_the_store_with_momentum(
    spec: CollabSpec, params, momentum, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    ckpt = store_checkpoint(store, params, momentum, competition=spec.key)
    assert ckpt != store_checkpoint(store, params, None, competition=spec.key)
    loaded = load_checkpoint_dir(
        _fetch(store, ckpt, tmp_path / "got"), param_shapes(params), competition=spec.key
    )
    assert _same(loaded.params, params)
    assert loaded.momentum is not None and _same(loaded.momentum, momentum)


def test_the_same_params_get_the_same_id_from_two_temp_dirs_and_two_stores(
    spec: CollabSpec, params, tmp_path: Path
) -> None:
    a = write_checkpoint_dir(params, None, tmp_path / "a", competition=spec.key)
    shuffled = {n: params[n].clone() for n in reversed(list(params))}  # insertion order differs
    b = write_checkpoint_dir(shuffled, None, tmp_path / "b", competition=spec.key)
    assert (a / CHECKPOINT_FILE).read_bytes() == (b / CHECKPOINT_FILE).read_bytes()
    first = store_checkpoint(LocalStore(tmp_path / "s1"), params, None, competition=spec.key)
    second = store_checkpoint(LocalStore(tmp_path / "s2"), shuffled, None, competition=spec.key)
    assert first == second == content_hash(a)
    # no round number inside: the only metadata is the competition
    with safe_open(str(a / CHECKPOINT_FILE), framework="pt") as handle:
        assert handle.metadata() == {"crucible": json.dumps({"competition": spec.key})}
    nudged = {**params, NORM: params[NORM].clone()}
    nudged[NORM][0] = torch.nextafter(nudged[NORM][0], torch.tensor(2.0))
    assert store_checkpoint(LocalStore(tmp_path / "s1"), nudged, None, competition=spec.key) != (
        first
    )


# ---- refused checkpoints ------------------------------------------------------------------


def _write(
    folder: Path, tensors: dict[str, torch.Tensor], spec: CollabSpec, meta: str | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    crucible = json.dumps({"competition": spec.key}) if meta is None else meta
    save_file(
        {n: t.contiguous() for n, t in tensors.items()},
        str(folder / CHECKPOINT_FILE),
        metadata={"crucible": crucible},
    )
    return folder


def _edited(params, momentum, case: str) -> dict[str, torch.Tensor]:
    out = dict(params)
    if case == "renamed":
        out["model.norm.weightx"] = out.pop(NORM)
    elif case == "missing":
        del out[NORM]
    elif case == "extra":
        out["lm_head.weight"] = out[EMBED].clone()
    elif case == "reshaped":
        out[EMBED] = out[EMBED].reshape(-1, 64)
    elif case == "truncated":
        out[NORM] = out[NORM][:-1]
    elif case == "half_momentum":  # momentum for some tensors only
        out.update({f"outer_momentum.{n}": momentum[n] for n in sorted(momentum)[:3]})
    elif case == "stray_momentum":
        out["outer_momentum.not_a_param"] = torch.zeros(3)
    return out


@pytest.mark.parametrize(
    "case",
    ["renamed", "missing", "extra", "reshaped", "truncated", "half_momentum", "stray_momentum"],
)
def test_a_checkpoint_with_other_tensor_names_or_shapes_is_refused(
    spec: CollabSpec, params, momentum, tmp_path: Path, case: str
) -> None:
    folder = _write(tmp_path / "c", _edited(params, momentum, case), spec)
    with pytest.raises(PayloadRejected, match="differ from the spec's model") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("where", ["param", "momentum"])
def test_a_checkpoint_not_in_fp32_is_refused(
    spec: CollabSpec, params, momentum, tmp_path: Path, dtype: torch.dtype, where: str
) -> None:
    tensors = {**params, **{f"outer_momentum.{n}": t for n, t in momentum.items()}}
    key = NORM if where == "param" else f"outer_momentum.{NORM}"
    tensors[key] = tensors[key].to(dtype)
    folder = _write(tmp_path / "c", tensors, spec)
    with pytest.raises(PayloadRejected, match="F32 only") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["param", "momentum"])
def test_a_checkpoint_holding_nan_or_inf_is_refused(
    spec: CollabSpec, params, momentum, tmp_path: Path, bad: float, where: str
) -> None:
    tensors = {**params, **{f"outer_momentum.{n}": t for n, t in momentum.items()}}
    key = EMBED if where == "param" else f"outer_momentum.{EMBED}"
    tensors[key] = tensors[key].clone()
    tensors[key][4095, 7] = bad
    folder = _write(tmp_path / "c", tensors, spec)
    with pytest.raises(PayloadRejected, match="is not finite") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


@pytest.mark.parametrize("claim", [1 << 40, (1 << 20) + 8, 2**64 - 1])
def test_a_checkpoint_whose_header_claims_a_huge_size_is_refused(
    spec: CollabSpec, params, tmp_path: Path, claim: int
) -> None:
    folder = write_checkpoint_dir(params, None, tmp_path / "c", competition=spec.key)
    path = folder / CHECKPOINT_FILE
    raw = path.read_bytes()
    path.write_bytes(claim.to_bytes(8, "little") + raw[8:])
    with pytest.raises(PayloadRejected, match=f"checkpoint header of {claim} bytes") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01\x02\x03", b"\x10" + b"\x00" * 7 + b"{not json}      ", b"GARBAGE!" * 1000],
    ids=["empty", "short", "bad-json-header", "garbage"],
)
def test_a_checkpoint_file_that_is_not_safetensors_is_refused(
    spec: CollabSpec, params, tmp_path: Path, raw: bytes
) -> None:
    (tmp_path / CHECKPOINT_FILE).write_bytes(raw)
    with pytest.raises(PayloadRejected, match="checkpoint (unreadable|header of)") as info:
        load_checkpoint_dir(tmp_path, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


def test_a_truncated_checkpoint_or_a_missing_file_is_refused(
    spec: CollabSpec, params, tmp_path: Path
) -> None:
    folder = write_checkpoint_dir(params, None, tmp_path / "c", competition=spec.key)
    path = folder / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(PayloadRejected, match="checkpoint unreadable") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"
    with pytest.raises(PayloadRejected, match="checkpoint unreadable"):
        load_checkpoint_dir(tmp_path / "nowhere", param_shapes(params), competition=spec.key)


@pytest.mark.parametrize(
    "meta",
    ['{"competition": "other@1"}', "{}", '{"competition": 5}', "not json"],
)
def test_a_checkpoint_for_another_competition_or_with_bad_metadata_is_refused(
    spec: CollabSpec, params, tmp_path: Path, meta: str
) -> None:
    folder = _write(tmp_path / "c", params, spec, meta=meta)
    with pytest.raises(PayloadRejected, match="checkpoint (metadata|unreadable)") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


@pytest.mark.parametrize("meta", ["[]", "null", '"collab@1"', "5"])
def test_checkpoint_metadata_that_is_json_but_not_an_object_is_refused(
    spec: CollabSpec, params, tmp_path: Path, meta: str
) -> None:
    """Valid JSON that is not an object is as corrupt as invalid JSON (not an AttributeError)."""
    folder = _write(tmp_path / "c", params, spec, meta=meta)
    with pytest.raises(PayloadRejected, match="checkpoint (metadata|unreadable)") as info:
        load_checkpoint_dir(folder, param_shapes(params), competition=spec.key)
    assert info.value.code == "checkpoint_corrupt"


# ---- the signed pointer -------------------------------------------------------------------

AGG = keypair("ckpt-aggregator")
REFUSED = "not a checkpoint pointer|signature does not verify"


def _pointer(round_index: int = 5, *, signer=AGG, competition: str = "collab@1", **kw):
    fields = {
        "checkpoint": hashlib.sha256(f"ckpt-{round_index}".encode()).hexdigest(),
        "previous": hashlib.sha256(f"ckpt-{round_index - 1}".encode()).hexdigest(),
        "aggregator": signer.ss58_address,
        "block": 10 * round_index + 1,
        **kw,
    }
    return CheckpointPointer(competition, round_index, **fields)


def test_a_signed_pointer_parses_back_to_itself() -> None:
    unsigned = _pointer()
    pointer = unsigned.signed(AGG)
    assert pointer.signature.startswith("0x") and len(pointer.signature) == 2 + 128
    assert pointer.pointer_id == unsigned.pointer_id  # the id covers everything but the signature
    assert CheckpointPointer.parse(pointer.to_bytes()) == pointer
    genesis = _pointer(0, previous=None).signed(AGG)
    assert CheckpointPointer.parse(genesis.to_bytes()) == genesis


@pytest.mark.parametrize(
    "edit",
    [
        {"round_index": 6},
        {"checkpoint": "ee" * 32},
        {"previous": None},
        {"block": 999},
        {"competition": "collab@2"},
        {"aggregator": keypair("ckpt-other").ss58_address},
        {"signature": "0x" + "00" * 64},
    ],
    ids=lambda e: next(iter(e)),
)
def test_a_pointer_edited_after_signing_fails(edit: dict) -> None:
    forged = dataclasses.replace(_pointer().signed(AGG), **edit)
    with pytest.raises(AuthError, match="signature does not verify") as info:
        CheckpointPointer.parse(forged.to_bytes())
    assert info.value.code == "bad_document_signature"


def test_only_the_aggregator_named_can_sign_a_pointer() -> None:
    with pytest.raises(AuthError, match="signed by the aggregator it names") as info:
        _pointer().signed(keypair("ckpt-other"))
    assert info.value.code == "wrong_signer"


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b"null", b'"text"', b'{"round_index": 1}', b'{"a":"\xff"}'],
)
def test_bytes_that_are_not_a_pointer_are_refused(raw: bytes) -> None:
    with pytest.raises(AuthError, match="not a checkpoint pointer") as info:
        CheckpointPointer.parse(raw)
    assert info.value.code == "bad_pointer"


def _retyped(**fields: object) -> bytes:
    return json.dumps({**json.loads(_pointer().signed(AGG).to_bytes()), **fields}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        _retyped(round_index="5"),
        _retyped(signature=5),
        _retyped(signature=None),
        _retyped(aggregator=5),
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["round-text", "signature-int", "signature-null", "aggregator-int", "deep-nesting"],
)
def test_hostile_json_in_a_pointer_is_an_auth_error_not_a_crash(raw: bytes) -> None:
    """Fields of the wrong type and pathological JSON are refused like any other bad pointer."""
    with pytest.raises(AuthError, match=REFUSED) as info:
        CheckpointPointer.parse(raw)
    assert info.value.code in {"bad_pointer", "bad_document_signature"}


_FIELDS = ("competition", "round_index", "checkpoint", "previous", "aggregator", "block")
_JSON = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    fields=st.fixed_dictionaries({}, optional={f: _JSON for f in (*_FIELDS, "signature")}),
    extra=st.dictionaries(st.text(max_size=8), _JSON, max_size=1),
)
def test_fuzzed_pointer_documents_parse_or_raise_auth_error(fields: dict, extra: dict) -> None:
    """Success only for the untouched signed pointer; everything else is an ``AuthError``."""
    genuine = json.loads(_pointer().signed(AGG).to_bytes())
    raw = json.dumps({**genuine, **fields, **extra}).encode()
    try:
        parsed = CheckpointPointer.parse(raw)
    except AuthError as exc:
        assert exc.code in {"bad_pointer", "bad_document_signature"}
    else:
        assert json.loads(parsed.to_bytes()) == genuine


# ---- latest_pointer over a document store -------------------------------------------------


def test_latest_pointer_returns_the_newest_round_among_genuine_aggregator_pointers(
    tmp_path: Path,
) -> None:
    docs = DocumentStore(tmp_path / "docs")
    agg_b, outsider = keypair("ckpt-aggregator-b"), keypair("ckpt-outsider")
    aggregators = {AGG.ss58_address, agg_b.ss58_address}
    assert latest_pointer(docs, "collab@1", aggregators) is None  # nothing published yet
    best = _pointer(7, signer=agg_b).signed(agg_b)
    publish_pointer(docs, best)  # written first: "newest" means the round, not the write time
    for pointer in (_pointer(5).signed(AGG), _pointer(6).signed(AGG)):
        publish_pointer(docs, pointer)
    # a non-aggregator's pointer, and an aggregator's for another competition
    publish_pointer(docs, _pointer(20, signer=outsider).signed(outsider))
    publish_pointer(docs, _pointer(21, competition="other@1").signed(AGG))
    # forged: an aggregator's pointer edited to a later round, stored under its new id
    forged = dataclasses.replace(_pointer(8).signed(AGG), round_index=22)
    publish_pointer(docs, forged)
    # genuine, but stored under a name that is not its id
    misnamed = _pointer(23).signed(AGG)
    docs.put(POINTER_KIND, hashlib.sha256(b"not its id").hexdigest(), misnamed.to_bytes())
    # garbage and unreadable documents
    docs.put(POINTER_KIND, hashlib.sha256(b"junk").hexdigest(), b"junk")
    docs.put(POINTER_KIND, hashlib.sha256(b"empty").hexdigest(), b"")
    docs.put(POINTER_KIND, hashlib.sha256(b"list").hexdigest(), b"[1, 2]")
    (docs.root / POINTER_KIND / "not-a-digest.json").write_bytes(misnamed.to_bytes())
    assert latest_pointer(docs, "collab@1", aggregators) == best
    assert latest_pointer(docs, "collab@1", {AGG.ss58_address}).round_index == 6
    assert latest_pointer(docs, "collab@1", {outsider.ss58_address}).round_index == 20
    assert latest_pointer(docs, "collab@1", set()) is None


def test_latest_pointer_skips_pointers_with_hostile_json(tmp_path: Path) -> None:
    docs = DocumentStore(tmp_path / "docs")
    good = _pointer(5).signed(AGG)
    publish_pointer(docs, good)
    for i, raw in enumerate(
        (_retyped(signature=5), _retyped(aggregator=5), b"[" * 100_000 + b"]" * 100_000)
    ):
        docs.put(POINTER_KIND, hashlib.sha256(f"hostile-{i}".encode()).hexdigest(), raw)
    assert latest_pointer(docs, "collab@1", {AGG.ss58_address}) == good


# ---- round_checkpoint: what the aggregators published for a round ------------------------


def _anchor_bundle(docs: DocumentStore, signer, collab: object) -> object:
    """A bundle signed by ``signer`` holding ``collab``, stored, and a neuron anchoring it."""
    from types import SimpleNamespace

    from crucible.protocol.anchor import anchor_text
    from crucible.protocol.auth import sign_document
    from crucible.store.documents import BUNDLES

    body = {"validator_hotkey": signer.ss58_address, "collab": collab}
    bundle_id = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()  # fmt: skip
    signed = {**body, "signature": sign_document(signer, "bundle", bundle_id)}
    docs.put(BUNDLES, bundle_id, json.dumps(signed).encode())
    commitment = SimpleNamespace(data=anchor_text(bundle_id))
    return SimpleNamespace(hotkey=signer.ss58_address, commitment=commitment)


def test_round_checkpoint_reads_anchored_bundles_then_pointers_and_survives_hostile_ones(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from crucible.collab.checkpoint import round_checkpoint

    docs = DocumentStore(tmp_path / "docs")
    agg_b, outsider = keypair("ckpt-aggregator-b"), keypair("ckpt-outsider")
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    record = {
        "competition": "collab@1",
        "round_index": 5,
        "base_checkpoint": a,
        "next_checkpoint": b,
    }
    neurons = [
        _anchor_bundle(docs, AGG, [record, "junk", [1], {"round_index": "x"}]),
        _anchor_bundle(docs, agg_b, 5),  # an aggregator's bundle whose collab is not a list
        _anchor_bundle(docs, outsider, [{**record, "round_index": 9}]),  # not an aggregator
        SimpleNamespace(hotkey=agg_b.ss58_address, commitment=None),
    ]
    mg = SimpleNamespace(neurons=neurons)
    aggregators = {AGG.ss58_address, agg_b.ss58_address}
    publish_pointer(docs, dataclasses.replace(_pointer(7), checkpoint=c).signed(AGG))
    assert round_checkpoint(mg, docs, "collab@1", aggregators, 5) == a  # the round's base
    assert round_checkpoint(mg, docs, "collab@1", aggregators, 6) == b  # the round after
    assert round_checkpoint(mg, docs, "collab@1", aggregators, 7) == c  # only a pointer says
    assert round_checkpoint(mg, docs, "collab@1", aggregators, 9) is None
    assert round_checkpoint(mg, docs, "other@1", aggregators, 5) is None
