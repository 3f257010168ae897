"""What the code never does with untrusted input: YAML is safe-loaded, unknown params keys are
errors, arrays are loaded without pickles, and no library code starts a shell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from alexnet.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]
LIBRARY = [p for d in ("alexnet", "flows", "tasks") for p in sorted((REPO / d).rglob("*.py"))]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


def test_params_yaml_is_safe_loaded(tmp_path):
    marker = tmp_path / "yaml-ran-code"
    params = tmp_path / "params.yaml"
    params.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(params)
    assert not marker.exists()


def test_unknown_params_keys_are_rejected(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 3\n  __class__: x\n")
    with pytest.raises(ParamsError, match="Unknown params key.*train.__class__"):
        load_params(params)


def test_no_pickles_anywhere():
    for path in LIBRARY:
        text = path.read_text()
        assert "import pickle" not in text and "cloudpickle" not in text, path
        for call in _calls(path):
            name = _name(call.func)
            if name.endswith(("np.load", "numpy.load")):
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("allow_pickle"), ast.Constant) \
                    and kw["allow_pickle"].value is False, f"{path}:{call.lineno}"
            assert name not in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"), \
                f"{path}:{call.lineno}"


def test_no_shell_in_library_code():
    for path in LIBRARY:
        for call in _calls(path):
            assert _name(call.func) not in ("os.system", "os.popen"), f"{path}:{call.lineno}"
            for kw in call.keywords:
                assert not (kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                                       and kw.value.value is False)), \
                    f"{path}:{call.lineno}: shell={ast.unparse(kw.value)}"
