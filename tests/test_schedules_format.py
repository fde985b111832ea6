"""The schedule file format: round trips, canonical hash, schema, and one clear error per bad input."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from schedules import (
    BlockGroup, ModelSpec, SamplingSpec, Schedule, ScheduleError, json_schema, load_schedule, save_schedule,
)

SPEC = ModelSpec("pixart", "PixArtTransformer2DModel",
                 (BlockGroup("transformer_blocks", 3, ("attn1", "attn2", "ff")),), model_id="tiny")
SAMPLING = SamplingSpec(num_inference_steps=4, scheduler="DPMSolverMultistepScheduler", guidance_scale=4.5,
                        height=16, width=16)


def example() -> Schedule:
    return Schedule.from_masks(SPEC, SAMPLING, {
        ("transformer_blocks", "attn1"): ["111", "010", "111", "0-0"],
        ("transformer_blocks", "ff"): ["111", "000", "101", "111"],
    }, metrics={"psnr": 31.5}, provenance={"searcher": "ecad"})


def test_round_trip_file(tmp_path):
    s = example()
    path = save_schedule(s, tmp_path / "s.json")
    back = load_schedule(path)
    assert back == s and back.hash == s.hash
    assert back.metrics == {"psnr": 31.5} and back.provenance == {"searcher": "ecad"}
    assert back.rows("transformer_blocks", "attn1") == ("111", "010", "111", "0-0")
    assert not list(tmp_path.glob(".*.tmp")), "atomic save leaves no temp file"


def test_hash_ignores_metrics_and_provenance_but_not_plan():
    s = example()
    assert s.with_info(metrics={"psnr": 1.0}, provenance={"x": 1}).hash == s.hash
    other = Schedule.from_masks(SPEC, SAMPLING, {("transformer_blocks", "attn1"): ["111", "011", "111", "000"]})
    assert other.hash != s.hash
    assert Schedule.from_json(s.to_json()).canonical_json() == s.canonical_json()


def test_canonical_form_is_key_order_independent():
    doc = example().to_dict()
    shuffled = json.loads(json.dumps(doc))
    shuffled["plan"]["transformer_blocks"] = dict(reversed(list(shuffled["plan"]["transformer_blocks"].items())))
    shuffled = dict(reversed(list(shuffled.items())))
    assert Schedule.from_dict(shuffled).hash == example().hash


def test_published_json_schema_accepts_files_we_write():
    jsonschema.validate(example().to_dict(), json_schema())
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_fractions_and_bits_round_trip():
    s = Schedule.from_masks(SPEC, SAMPLING, {("transformer_blocks", "attn1"): ["111", "010", "111", "000"]})
    assert s.compute_fraction("transformer_blocks", "attn1") == pytest.approx(7 / 12)
    assert s.fractions()["transformer_blocks.ff"] == 1.0
    bits = s.to_bits()
    assert len(bits) == 3 * 3 * 3
    assert Schedule.from_bits(SPEC, SAMPLING, bits) == s


def _mutate(path: str, value):
    doc = example().to_dict()
    keys = path.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()

BAD_DOCUMENTS = [
    ("version", 2, "version: unsupported version 2"),
    ("version", True, "version: unsupported version True"),
    ("format", "other", "format: must be 'cachesearch.schedule'"),
    ("model", _DELETE, "model: is required"),
    ("model.block_groups", [], "model.block_groups: must list at least one"),
    ("model.block_groups.0.num_blocks", 0, "model.block_groups[0].num_blocks: must be >= 1"),
    ("model.block_groups.0.num_blocks", "3", "model.block_groups[0].num_blocks: must be an integer"),
    ("model.block_groups.0.components", ["attn1", "attn1"], "components: must be a non-empty list of distinct"),
    ("sampling.num_inference_steps", 5, "plan.transformer_blocks.attn1: has 4 steps but sampling.num_inference_steps is 5"),
    ("sampling.cfg", "sideways", "sampling.cfg: must be one of"),
    ("sampling.timesteps", [999, 500], "sampling.timesteps: lists 2 timesteps but num_inference_steps is 4"),
    ("sampling.timesteps", [999, 500, 500, 100], "sampling.timesteps: must strictly descend (noise to data): [1] = 500, [2] = 500"),
    ("sampling.timesteps", [999, 500, 100, -1], "sampling.timesteps: must be >= 0, got -1"),
    ("sampling.timesteps", [999, "500", 100, 1], "sampling.timesteps: must be a list of numbers or null"),
    ("sampling.sigmas", [1.0, 0.5, 0.2, 0.0], "sampling.sigmas: must be > 0, got 0"),
    ("sampling.sigmas", [1.0, 0.5], "sampling.sigmas: lists 2 sigmas but num_inference_steps is 4"),
    ("plan.transformer_blocks.attn1.1", "0101", "plan.transformer_blocks.attn1[1]: has 4 characters but block group 'transformer_blocks' has 3 blocks"),
    ("plan.transformer_blocks.attn1.1", "0x1", "plan.transformer_blocks.attn1[1]: character(s) ['x'] outside the alphabet"),
    ("plan.transformer_blocks.attn1.0", "101", "plan.transformer_blocks.attn1[0]: step 0 must compute"),
    ("plan.transformer_blocks.attn1", ["111", "111"], "plan.transformer_blocks.attn1: has 2 steps"),
    ("plan.transformer_blocks.attn1", "111", "plan.transformer_blocks.attn1: must be a list of strings"),
    ("plan.transformer_blocks.attn1.2", 111, "plan.transformer_blocks.attn1[2]: must be a string"),
    ("plan.transformer_blocks.ff", _DELETE, "plan.transformer_blocks.ff: missing component"),
    ("plan.transformer_blocks.attn3", ["111"] * 4, "unknown component 'attn3'"),
    ("plan.single_blocks", {}, "plan: unknown block group 'single_blocks'"),
    ("metrics", [1], "metrics: must be an object"),
    ("extra", 1, "unknown field(s) ['extra']"),
    ("model.block_groups.0.layers", 28, "model.block_groups[0]: unknown field(s) ['layers']"),
    ("model.subset", "yes", "model.subset: must be true or false"),
]


@pytest.mark.parametrize("path,value,message", BAD_DOCUMENTS, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD_DOCUMENTS])
def test_malformed_documents_raise_one_clear_error(tmp_path, path, value, message):
    doc = _mutate(path, copy.deepcopy(value) if value is not _DELETE else value)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(doc))
    with pytest.raises(ScheduleError) as err:
        load_schedule(file)
    assert message in str(err.value)
    assert str(file) in str(err.value), "the error names the file"


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ("", "not valid JSON"),
    ("[" * 200_000, "nested too deeply"),                 # json's RecursionError, as one clean error
    ('{"format": "cachesearch.sched', r"Unterminated string starting at \(line 1, column 12\)"),
])
def test_not_a_schedule_file(tmp_path, content, message):
    file = tmp_path / "s.json"
    file.write_text(content)
    with pytest.raises(ScheduleError, match=message):
        load_schedule(file)


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x80\x04\x95pickle\xff\xfe")
    with pytest.raises(ScheduleError, match="not UTF-8"):
        load_schedule(binary)
    with pytest.raises(ScheduleError, match="file not found"):
        load_schedule(tmp_path / "missing.json")
    with pytest.raises(ScheduleError, match="is a directory"):
        load_schedule(tmp_path)


def test_subset_flag_is_hashed_only_when_set():
    """`model.subset: true` changes what the file means, so it is in the hash; files without it keep
    the hashes they always had."""
    plain = example()
    doc = plain.to_dict()
    assert "subset" not in doc["model"]
    doc["model"]["subset"] = True
    subset = Schedule.from_dict(doc)
    assert subset.model.subset and subset.hash != plain.hash
    assert Schedule.from_json(subset.to_json()) == subset
    jsonschema.validate(subset.to_dict(), json_schema())
    doc["model"]["subset"] = False
    assert Schedule.from_dict(doc).hash == plain.hash


def sigma_example() -> Schedule:
    sampling = SamplingSpec(num_inference_steps=4, scheduler="FlowMatchEulerDiscreteScheduler",
                            sigmas=(1.0, 0.7, 0.4, 0.1))
    return Schedule.all_compute(SPEC, sampling)


def test_explicit_values_say_their_kind_round_trip_and_validate_against_the_schema(tmp_path):
    s = sigma_example()
    doc = s.to_dict()
    assert doc["sampling"]["sigmas"] == [1.0, 0.7, 0.4, 0.1] and doc["sampling"]["timesteps"] is None
    jsonschema.validate(doc, json_schema())
    back = load_schedule(save_schedule(s, tmp_path / "s.json"))
    assert back == s and back.sampling.explicit == ("sigmas", (1.0, 0.7, 0.4, 0.1))
    both = copy.deepcopy(doc)
    both["sampling"]["timesteps"] = [999, 700, 400, 100]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(both, json_schema())
    with pytest.raises(ScheduleError, match="sampling.sigmas: give timesteps or sigmas, not both"):
        Schedule.from_dict(both)


def test_documents_without_sigmas_keep_their_form_and_hash():
    """Version-1 documents written before `sigmas` existed load unchanged: no new key, same hash."""
    doc = example().to_dict()
    assert "sigmas" not in doc["sampling"] and doc["version"] == 1
    assert Schedule.from_dict(json.loads(json.dumps(doc))).hash == example().hash
    assert example().hash == "7df8478246191efea538f0e69abd51a5825143bd88a7e4304ae5087cbf582a42"   # as before sigmas
    ints = Schedule.all_compute(SPEC, SamplingSpec(2, timesteps=(999, 500)))
    assert ints.hash == Schedule.all_compute(SPEC, SamplingSpec(2, timesteps=(999.0, 500.0))).hash
