"""The README's examples, run in order against a service on the shipped models.

Every ```bash and ```python block of README.md is a test, run top to bottom (Sybil parses them):

- a bash block runs on its own under `bash -euo pipefail`, in the repository root, with this
  interpreter's bin folder first on PATH (so `python`, `cvae` and `cvae-serve` are the ones under
  test); a non-zero exit fails it, showing its stderr. curl fails on an HTTP error status there
  (`--fail-with-body`, from a .curlrc of the test's own). What a block creates at the top of the
  repository (an output file, a `scores/` folder) is removed after it;
- python blocks share one namespace, as consecutive cells of one session.

`localhost:8000` and `127.0.0.1:8000` in a block are pointed at the service this module starts on a
free port, so the README stays copy-pasteable. Blocks fenced as ```shell (docker, clusters,
hour-long training), ```text or ```json are shown, not run.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from servers import running_server
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser
from sybil.region import Lexeme

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ADDRESSES = ("localhost:8000", "127.0.0.1:8000")
BASH_TIMEOUT_S = 300
CURLRC = "fail-with-body\nshow-error\n"  # an HTTP error fails the block's curl, and so the block


def first_on(variable: str, path: Path) -> str:
    return os.pathsep.join([str(path), *filter(None, [os.environ.get(variable)])])


def this_tree() -> dict[str, str]:
    """The environment of a subprocess that runs this tree's packages, whichever checkout is installed."""
    return {**os.environ, "PYTHONPATH": first_on("PYTHONPATH", ROOT)}


def run_bash(example) -> None:
    """One bash block on its own, in the repository root; what it adds there is removed after."""
    env = {**this_tree(), "PATH": first_on("PATH", Path(sys.executable).parent)}
    before = set(ROOT.iterdir())
    try:
        with tempfile.TemporaryDirectory() as curl_home:
            Path(curl_home, ".curlrc").write_text(CURLRC)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", str(example.parsed)],
                cwd=ROOT,
                env={**env, "CURL_HOME": curl_home},
                capture_output=True,
                text=True,
                timeout=BASH_TIMEOUT_S,
            )
    finally:
        for path in set(ROOT.iterdir()) - before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if result.returncode != 0:
        raise AssertionError(
            f"README.md line {example.line}: bash exited with {result.returncode}\n"
            f"--- stderr\n{result.stderr}\n--- stdout (last 2000 characters)\n{result.stdout[-2000:]}"
        )


def readme_examples() -> list:
    """The README's bash and python blocks, in order, sharing one document namespace."""
    parsers = [CodeBlockParser("bash", run_bash), PythonCodeBlockParser()]
    return list(Sybil(parsers).parse(README))


def language(example) -> str:
    return "bash" if example.region.evaluator is run_bash else "python"


EXAMPLES = readme_examples()


@pytest.fixture(scope="module")
def address():
    """`cvae-serve` on the shipped model repository, on a free port: its host:port."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", this_tree()["PYTHONPATH"])
        with running_server(None, model_repository=ROOT / "models", log_format="text") as (base, _):
            yield base.removeprefix("http://")


def pointed_at(source: str, address: str) -> str:
    for default in ADDRESSES:
        source = source.replace(default, address)
    return source


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{language(e)}-line-{e.line}" for e in EXAMPLES])
def test_readme_example(example, address):
    source = example.parsed
    assert isinstance(source, Lexeme), f"README.md line {example.line}: write python blocks as code, not >>> sessions"
    example.parsed = Lexeme(pointed_at(source, address), source.offset, source.line_offset)
    try:
        example.evaluate()
    finally:
        example.parsed = source


def test_readme_has_examples_of_both_kinds():
    assert {language(example) for example in EXAMPLES} == {"bash", "python"}
