"""The suite's own setup (tests/conftest.py): the xdist work units keep each shared fixture in one worker,
and the Ray processes the tests start read no auth setting left in the environment or the home folder."""
from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path

from conftest import RAY_TOKEN, TESTS, ray_env, work_units


def _shared_fixtures(item) -> list[tuple[str, str]]:
    """(scope, name) of the module- and session-scoped fixtures of tests/ that ``item`` uses."""
    found = []
    for name, definitions in item._fixtureinfo.name2fixturedefs.items():
        try:
            ours = Path(inspect.getfile(definitions[-1].func)).resolve().is_relative_to(TESTS)
        except (TypeError, OSError):  # pytest's own fixtures (tmp_path_factory), plugins'
            ours = False
        if ours and definitions[-1].scope in ("module", "session"):
            found.append((definitions[-1].scope, name))
    return found


def test_every_test_sharing_a_fixture_is_in_its_files_work_unit(request):
    """What work_units reads from the files' text against what the collected tests really use: a test
    using a module- or session-scoped fixture of ours lies in a unit, and one session fixture in one unit."""
    units = work_units()
    unit_of_session_fixture = defaultdict(set)
    for item in request.session.items:
        if not hasattr(item, "_fixtureinfo"):
            continue
        file = item.nodeid.split("::", 1)[0]
        for scope, name in _shared_fixtures(item):
            assert file in units, f"{item.nodeid} uses the {scope}-scoped fixture {name}, its file no work unit"
            if scope == "session":
                unit_of_session_fixture[name].add(units[file])
    assert all(len(found) == 1 for found in unit_of_session_fixture.values()), dict(unit_of_session_fixture)


def test_work_units_from_the_files_text(tmp_path):
    (tmp_path / "conftest.py").write_text('@pytest.fixture(scope="session")\ndef tiny_run(tmp_path_factory):\n'
                                          '    ...\n@pytest.fixture(scope="module")\ndef local_ray():\n    ...\n')
    files = {
        "test_plain.py": "def test_a(tmp_path):\n    pass\n",
        "test_session.py": "def test_a(tiny_run):\n    pass\n",
        "test_session_too.py": "@pytest.fixture\ndef copy(tiny_run, tmp_path):\n    ...\n",
        "test_own.py": '@pytest.fixture(scope="module")\ndef model():\n    ...\n',
        "test_shadows.py": '@pytest.fixture(scope="module")\ndef tiny_run():\n    ...\n',
        "test_imports.py": "from test_own import model  # noqa: F401 - a fixture\n",
        "test_helpers.py": "from test_own import something_else\n",
        "test_ray.py": 'pytestmark = pytest.mark.xdist_group("ray")\n\ndef test_a(local_ray):\n    pass\n',
        "test_module_of_conftest.py": "def test_a(local_ray):\n    pass\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    unit = lambda name: f"{tmp_path.name}/{name}"  # noqa: E731
    assert work_units(tmp_path) == {
        unit("test_session.py"): "tiny_run", unit("test_session_too.py"): "tiny_run",
        unit("test_own.py"): unit("test_own.py"), unit("test_shadows.py"): unit("test_shadows.py"),
        unit("test_imports.py"): unit("test_imports.py"), unit("test_ray.py"): "ray",
        unit("test_module_of_conftest.py"): unit("test_module_of_conftest.py")}


def test_ray_env_sets_the_token_mode_explicitly_or_not_at_all():
    base = {"PATH": "/bin", "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN_PATH": "/x", "RAY_ADDRESS": "h:1"}
    assert ray_env(base) == {"PATH": "/bin", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
    assert ray_env(base, token=False) == {"PATH": "/bin"}
