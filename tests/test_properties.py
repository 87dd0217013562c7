"""Property tests: command-line config overrides and labeled-list parsing, on generated input."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.data.label_subset import LabeledListError, read_labeled_list

TMP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# A key of each value type, with values its validation accepts.
VALUES = {
    "MOCO.K": st.integers(256, 2**31),  # at least the default batch
    "SEED": st.integers(0, 2**31),
    "SOLVER.BASE_LR": st.floats(1e-6, 1e3, allow_nan=False),
    "MOCO.T": st.floats(1e-4, 10.0, allow_nan=False),
    "MODEL.CIFAR_STEM": st.booleans(),
    "SOLVER.STEPS": st.lists(st.integers(0, 1000), max_size=4).map(sorted).map(tuple),
    "OUTPUT_DIR": st.from_regex(r"[a-z_][a-z0-9_./-]{0,30}", fullmatch=True),
}


@TMP
@given(st.dictionaries(st.sampled_from(sorted(VALUES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({key: VALUES[key] for key in keys})
))  # fmt: skip
def test_overrides_round_trip(values):
    """``KEY str(value)`` on the command line gives back ``value``, of the key's type."""
    argv = [item for key, value in values.items() for item in (key, repr(value))]
    argv = [text[1:-1] if text.startswith("'") else text for text in argv]  # unquoted strings
    cfg = load_cfg(None, argv)
    for key, value in values.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value and type(node) is type(value), key


WRONG_FOR_INT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    st.booleans(),
    st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(lambda s: s not in ("true",)),
    st.lists(st.integers(), max_size=3),
)


@TMP
@given(key=st.sampled_from(["MOCO.K", "SOLVER.BATCH_SIZE", "SEED", "LOG.PERIOD"]),
       value=WRONG_FOR_INT)  # fmt: skip
def test_type_errors_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_cfg(None, [key, str(value)])


@TMP
@given(text=st.text(max_size=40))
@example(text="{[]: 1}")  # literal_eval raises TypeError (unhashable key)
@example(text="'quoted'")
def test_values_are_parsed_as_data_never_run(text, tmp_path_factory):
    """Any text as a value is a literal or a plain string (or a ConfigError), never code."""
    marker = tmp_path_factory.getbasetemp() / "ran"
    hostile = f"__import__('os').mkdir({str(marker)!r})"
    for value in (text, hostile):
        try:
            cfg = load_cfg(None, ["OUTPUT_DIR", value])
        except ConfigError:
            continue
        try:
            expected = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            expected = value
        assert cfg.OUTPUT_DIR == expected
    assert not marker.exists()


NAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
SAMPLE_IDS = st.lists(
    st.tuples(st.sampled_from(["cat", "dog", "n01/x"]), NAME), min_size=1, max_size=30, unique=True
).map(lambda pairs: [f"{folder}/{name}" for folder, name in pairs])


@TMP
@given(ids=SAMPLE_IDS, data=st.data())
def test_labeled_list_parses_what_it_lists(ids, data, tmp_path_factory):
    """Listed relative paths, in any order, with comments, blank lines, ``./``, doubled slashes,
    surrounding spaces and repeats, select exactly the listed images."""
    chosen = data.draw(st.lists(st.sampled_from(ids), unique=True))
    repeats = data.draw(st.lists(st.sampled_from(chosen), max_size=3)) if chosen else []
    spelled = [
        data.draw(st.sampled_from([sid, f"./{sid}", sid.replace("/", "//"), f"  {sid}\t"]))
        for sid in chosen + repeats
    ]
    noise = data.draw(st.lists(st.sampled_from(["", "   ", "# a comment", "#../etc/passwd"])))
    lines = data.draw(st.permutations(spelled + noise))
    path = Path(tmp_path_factory.mktemp("lists")) / "labeled.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mask = read_labeled_list(path, ids)
    assert np.array_equal(mask, np.isin(ids, chosen))


@TMP
@given(ids=SAMPLE_IDS, escape=st.sampled_from(["../", "cat/../../", "/abs/", "/"]), data=st.data())
def test_labeled_list_rejects_paths_outside_the_root(ids, escape, data, tmp_path_factory):
    entry = escape + data.draw(st.sampled_from(ids))
    path = Path(tmp_path_factory.mktemp("lists")) / "labeled.txt"
    path.write_text(f"{ids[0]}\n{entry}\n", encoding="utf-8")
    with pytest.raises(LabeledListError, match="outside the dataset root"):
        read_labeled_list(path, ids)


def test_yaml_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"OUTPUT_DIR: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_cfg(str(evil))
    assert not marker.exists()
