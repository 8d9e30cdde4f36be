"""Device profiles: every shipped profile parses; unknown keys and bad values are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl.errors import ConfigError, ProfileError
from edgecl.runtime.profile import DeviceProfile

DEVICES = Path(__file__).resolve().parents[1] / "devices"
SHIPPED = ("x86-cpu", "raspberry-pi-4", "jetson-nano", "jetson-orin-nano")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_parses(name):
    p = DeviceProfile.load(DEVICES / f"{name}.toml")
    assert p.name == name
    assert p.providers[-1] == "CPUExecutionProvider"
    assert p.allow_spinning is False
    assert p.intra_op_threads >= 1
    assert p.memory_budget_bytes > 0 and p.latency_target_us > 0
    assert p.journal_fsync_s == 1.0  # DESIGN §10: the label journal's fsync period


def test_every_toml_in_devices_is_a_valid_profile():
    files = sorted(DEVICES.glob("*.toml"))
    assert {f.stem for f in files} >= set(SHIPPED)
    for f in files:
        assert DeviceProfile.load(f).name == f.stem


def test_x86_profile_is_the_default():
    assert DeviceProfile.load(DEVICES / "x86-cpu.toml") == DeviceProfile.default()


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-orin-nano"])
def test_jetson_profiles_prefer_tensorrt_then_cuda_with_an_engine_cache(name):
    p = DeviceProfile.load(DEVICES / f"{name}.toml")
    assert p.providers == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    assert p.engine_cache_dir
    assert "~" not in str(p.engine_cache_path)


def test_missing_keys_take_the_default_values(tmp_path):
    f = tmp_path / "mini.toml"
    f.write_text('name = "mini"\nintra_op_threads = 2\n')
    p = DeviceProfile.load(f)
    assert p.intra_op_threads == 2
    assert p.baudrate == DeviceProfile.default().baudrate


def test_unknown_key_is_rejected_and_named(tmp_path):
    f = tmp_path / "typo.toml"
    f.write_text('name = "typo"\nintra_op_thread = 2\n')
    with pytest.raises(ProfileError, match=r"typo\.toml: unknown key\(s\) intra_op_thread"):
        DeviceProfile.load(f)


def test_nested_table_is_an_unknown_key(tmp_path):
    f = tmp_path / "nested.toml"
    f.write_text('name = "n"\n[session]\nthreads = 1\n')
    with pytest.raises(ProfileError, match="unknown key.*session"):
        DeviceProfile.load(f)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("intra_op_threads", -1, r"intra_op_threads = -1: must be an integer in \[0, 1024\]"),
        ("intra_op_threads", "four", "intra_op_threads = 'four'"),
        ("intra_op_threads", 1.5, "intra_op_threads = 1.5"),
        ("allow_spinning", "no", "allow_spinning = 'no': must be true or false"),
        ("arena", 1, "arena = 1: must be true or false"),
        ("providers", [], "providers"),
        ("providers", ["CUDAExecutionProvidr"], "CUDAExecutionProvidr"),
        ("providers", ["CPUExecutionProvider", "CPUExecutionProvider"], "without duplicates"),
        ("providers", "CPUExecutionProvider", "providers"),
        ("arch", "sparc", "arch = 'sparc': must be one of"),
        ("name", "", "name = ''"),
        ("name", "a/b", "name = 'a/b'"),
        ("baudrate", 0, r"baudrate = 0: must be an integer in \[50,"),
        ("serial_timeout_s", 0, r"serial_timeout_s = 0: must be a number in \(0"),
        ("checkpoint_every_s", -5.0, "checkpoint_every_s = -5.0"),
        ("journal_fsync_s", -1, r"journal_fsync_s = -1: must be a number in \[0.0, 3600.0\]"),
        ("journal_fsync_s", float("nan"), "journal_fsync_s = nan"),
        ("memory_budget_bytes", 10, "memory_budget_bytes = 10"),
        ("latency_target_us", 0, "latency_target_us = 0"),
        ("engine_cache_dir", "", "engine_cache_dir = ''"),
        ("engine_cache_dir", 3, "engine_cache_dir = 3"),
    ],
)
def test_bad_value_is_rejected_with_field_value_and_range(key, value, message):
    data = {"name": "bad", key: value}
    with pytest.raises(ProfileError, match=message):
        DeviceProfile.from_dict(data)


def test_bad_value_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "slow.toml"
    f.write_text('name = "slow"\nbaudrate = -9600\n')
    with pytest.raises(ProfileError, match=r"slow\.toml: DeviceProfile\.baudrate = -9600"):
        DeviceProfile.load(f)


def test_name_is_required():
    with pytest.raises(ProfileError, match="missing key 'name'"):
        DeviceProfile.from_dict({"arch": "x86_64"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name = \n", "not valid TOML"),
        (b"\xff\xfe name", "not UTF-8"),
        (b"x" * 70_000, "a profile is at most"),
    ],
)
def test_unreadable_file_is_a_profile_error(tmp_path, content, message):
    f = tmp_path / "bad.toml"
    f.write_bytes(content)
    with pytest.raises(ProfileError, match=message):
        DeviceProfile.load(f)


def test_missing_file_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        DeviceProfile.load(tmp_path / "nope.toml")


def test_profile_error_is_a_config_error():
    assert issubclass(ProfileError, ConfigError) and issubclass(ProfileError, ValueError)


def test_profile_is_frozen_and_round_trips_through_a_dict():
    p = DeviceProfile.default()
    with pytest.raises(AttributeError):
        p.intra_op_threads = 4  # type: ignore[misc]
    d = p.to_dict()
    assert d["providers"] == ["CPUExecutionProvider"]
    assert DeviceProfile.from_dict(d) == p


def test_numbers_given_as_ints_become_floats():
    p = DeviceProfile.from_dict({"name": "n", "serial_timeout_s": 1, "checkpoint_every_s": 60})
    assert isinstance(p.serial_timeout_s, float) and p.checkpoint_every_s == 60.0


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**41),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.sampled_from(["CPUExecutionProvider", "CUDAExecutionProvider", "x"]), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(DeviceProfile.default().to_dict())), _values))
def test_any_mapping_gives_a_valid_profile_or_a_profile_error(data):
    data = {"name": "h", **data}
    try:
        p = DeviceProfile.from_dict(data)
    except ProfileError:
        return
    # Whatever was accepted satisfies the documented ranges.
    assert p.providers and 0 <= p.intra_op_threads <= 1024
    assert isinstance(p.allow_spinning, bool) and p.serial_timeout_s > 0
