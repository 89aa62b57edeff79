"""Python and C agree on every format constant (docs/FORMAT.md): the header is parsed and compared with
sdk/edgemerge/emm/constants.py, and the compiled module reports the same values it was built with."""
import re
from pathlib import Path

from edgemerge.emm import constants as F

HEADER = Path(__file__).resolve().parents[2] / "runtime_c" / "include" / "edgemerge" / "em_format.h"


def c_constants() -> dict[str, int]:
    out = {}
    for name, value in re.findall(r"^#define EM_([A-Z0-9_]+)\s+\(?([0-9A-Fa-fx]+)u?\)?", HEADER.read_text(), re.M):
        out[name] = int(value.rstrip("u"), 0)
    return out


def test_every_python_constant_is_in_the_c_header_with_the_same_value():
    c = c_constants()
    py = F.constants()
    assert set(py) - {"MAGIC"} <= set(c) | {"SENTINEL_F32"}, set(py) - set(c)
    for name, value in py.items():
        if name in ("SENTINEL_F32",):
            continue
        assert c[name] == value, f"EM_{name}: C {c[name]} != Python {value}"


def test_every_c_constant_is_in_python():
    py = F.constants()
    missing = sorted(set(c_constants()) - set(py))
    assert not missing, f"constants only in the C header: {missing}"


def test_magic_and_sentinels_are_consistent():
    import struct
    assert struct.unpack("<I", F.MAGIC)[0] == F.MAGIC_U32
    assert struct.unpack("<I", struct.pack("<f", F.SENTINEL_F32))[0] == F.SENTINEL_F32_BITS


def test_compiled_module_matches_python():
    from edgemerge import _runtime as runtime
    compiled = runtime.compiled_format_constants()
    assert compiled, "the module reported no constants"
    for name, value in compiled.items():
        assert value == F.constants()[name], name


def test_c_metadata_keys_mirror_python_keys():
    c_keys = dict(re.findall(r'^#define EM_(KEY_[A-Z0-9_]+)\s+"([^"]+)"', HEADER.read_text(), re.M))
    assert c_keys, "no EM_KEY_* in the C header"
    py = F.keys()
    for name, value in c_keys.items():
        assert py.get(name) == value, f"EM_{name}: C {value!r} != Python {py.get(name)!r}"


def test_every_metadata_key_is_named_once():
    values = list(F.keys().values())
    assert len(values) == len(set(values)), "two Keys names for one key"
