"""The commands the documentation gives a user to copy still match the code: every ``moviessl ...``
names a subcommand and options it has, and its dotted overrides load; every ``python -m`` module of
the package or the benchmarks exists and takes the options shown; every ``moviessl.*`` name resolves;
every ``make`` target exists. A renamed flag or config key used to live on in the docs unnoticed."""

import argparse
import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

from moviessl.cli import build_parser, is_override
from moviessl.config import load_config
from moviessl.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *(ROOT / "docs" / f"{n}.md" for n in ("results", "benchmarks", "synthmovies", "design"))]
# the subcommands whose KEY=VALUE overrides are one stage's config
STAGES = {
    ("pretrain-backbone",): "backbone",
    ("probe-backbone",): "backbone",
    ("pretrain-context",): "context",
    ("pretrain-ot",): "ot_pretrain",
    ("finetune", "vidsitu"): "vidsitu",
    ("finetune", "lvu"): "lvu",
}
# a value the reader fills in: CKPT, DIR, <name>, $VAR, {a,b}, [optional], ...
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|[<>${}\[\]|…]|\.\.\.")
SHELL_END = re.compile(r"\s(?:&&|\|\||;|\||>|2>)\s|\s2>&1")


def code_spans(text: str) -> list[tuple[int, str]]:
    """(line, text) of every fenced-block line (a trailing backslash joins the next) and every inline
    code span (a span may cross a line break of its paragraph)."""
    spans, prose, fence, cont, start = [], [], False, "", 0
    for n, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            prose.append((n, ""))
            continue
        if not fence:
            prose.append((n, line))
            continue
        prose.append((n, ""))
        start = start or n
        if line.rstrip().endswith("\\"):
            cont += line.rstrip()[:-1] + " "
            continue
        spans.append((start, cont + line))
        cont, start = "", 0
    para: list[tuple[int, str]] = []
    for n, line in [*prose, (0, "")]:
        if line.strip():
            para.append((n, line.strip()))
            continue
        if para:
            joined = " ".join(t for _, t in para)
            spans += [(para[0][0], m.group(2)) for m in re.finditer(r"(`+)(.+?)\1", joined)]
        para = []
    return spans


def doc_spans():
    return [(f"{p.relative_to(ROOT)}:{n}", s) for p in DOCS for n, s in code_spans(p.read_text(encoding="utf-8"))]


def _tokens(rest: str) -> list[str]:
    rest = SHELL_END.split(rest)[0]
    try:
        return shlex.split(rest, comments=True)
    except ValueError:  # an unbalanced quote of a placeholder
        return rest.split()


def _subparsers(p: argparse.ArgumentParser) -> dict:
    sub = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return sub[0].choices if sub else {}


def moviessl_command_problems(where: str, span: str, parser: argparse.ArgumentParser) -> list[str]:
    problems = []
    for m in re.finditer(r"(?:^|[\s/(])moviessl\s+([a-z].*)$", span):
        toks, p, path = _tokens(m.group(1)), parser, []
        while len(toks) > len(path) and toks[len(path)] in _subparsers(p):
            tok = toks[len(path)]
            p = _subparsers(p)[tok]
            path.append(tok)
        if not path:
            problems.append(f"{where}: `moviessl {toks[0]}`: no such command")
            continue
        options = {o for a in p._actions for o in a.option_strings}
        args = [t.strip("[](){}") for t in toks[len(path) :]]
        for flag in [a.split("=")[0] for a in args if a.startswith("--") and a != "--" and "<" not in a]:
            if flag not in options:
                problems.append(f"{where}: `moviessl {' '.join(path)}` has no option {flag}")
        stage = STAGES.get(tuple(path))
        preset = args[args.index("--preset") + 1] if "--preset" in args[:-1] else "cpu"
        overrides = [a for a in args if is_override(a) and "=" in a and "." in a.split("=")[0]]
        if stage and not PLACEHOLDER.search(preset) and preset in ("cpu", "paper"):
            concrete = [o for o in overrides if not any(PLACEHOLDER.search(x) for x in (o, o.split("=", 1)[1]))]
            try:
                load_config(stage, preset, concrete)
            except BadInputError as e:
                problems.append(f"{where}: `moviessl {' '.join(path)}` overrides: {e}")
    return problems


def _module_file(module: str) -> Path | None:
    top, *rest = module.split(".")
    base = ROOT / "src" / top if top == "moviessl" else ROOT / top
    for cand in (base.joinpath(*rest).with_suffix(".py"), base.joinpath(*rest, "__main__.py")):
        if cand.is_file():
            return cand
    return None


def _module_options(path: Path) -> set[str]:
    opts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            opts |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return opts


def python_module_problems(where: str, span: str) -> list[str]:
    problems = []
    for m in re.finditer(r"python3?\s+-m\s+((?:moviessl|benchmarks)(?:\.\w+)+)(.*)$", span):
        module, path = m.group(1), _module_file(m.group(1))
        if path is None:
            problems.append(f"{where}: `python -m {module}`: no such module")
            continue
        options = _module_options(path)
        for t in _tokens(m.group(2)):
            flag = t.strip("[](){}").split("=")[0]
            if options and flag.startswith("--") and "<" not in flag and flag not in options:
                problems.append(f"{where}: `python -m {module}` has no option {flag}")
    return problems


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_documented_moviessl_command_parses():
    parser = build_parser()
    problems = [p for where, span in doc_spans() for p in moviessl_command_problems(where, span, parser)]
    assert problems == []


def test_every_documented_python_module_exists_with_its_options():
    problems = [p for where, span in doc_spans() for p in python_module_problems(where, span)]
    assert problems == []


def test_every_cited_package_name_resolves():
    names = {}
    for p in DOCS:
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            for m in re.finditer(r"(?<![\w/.-])(moviessl(?:\.[A-Za-z_]\w*)+)(?!\w)", line):
                names.setdefault(m.group(1), f"{p.relative_to(ROOT)}:{n}")
    assert [f"{where}: {name}" for name, where in sorted(names.items()) if not _resolves(name)] == []


def test_every_documented_make_target_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = {(w, m.group(1)) for w, span in doc_spans() for m in re.finditer(r"(?:^|\s)make ([a-z][\w-]*)", span)}
    assert [f"{where}: make {t}" for where, t in sorted(used) if t not in targets] == []


@pytest.mark.parametrize(
    "span, said",
    [
        ("moviessl pretrain --method cvrl", "no such command"),
        ("moviessl extract --backbone b.pt --videos v --out o --strides 2", "has no option --strides"),
        ("moviessl finetune vidsitu --task srl --data-root r --out o srl.lrr=0.1", "srl.lrr"),
        ("moviessl pretrain-context --features f --out o --preset paper maskpred.alpha=0.6", None),
        ("moviessl synth --preset demo --out D   # [--seed N] [--size S]", None),
        ("moviessl demo --profile {full,quick} [--threads 1]", None),
    ],
)
def test_the_command_check_finds_what_it_should(span, said):
    problems = moviessl_command_problems("x", span, build_parser())
    assert (said is None and problems == []) or (said is not None and len(problems) == 1 and said in problems[0])


def test_the_module_check_finds_what_it_should():
    assert "no such module" in python_module_problems("x", "python -m benchmarks.no_such_bench")[0]
    assert "no option --nope" in python_module_problems("x", "python -m benchmarks.run_all --nope")[0]
    assert python_module_problems("x", "python -m benchmarks.run_all [--only decode]") == []
    assert code_spans("a `python -m\nbenchmarks.x` b\n```bash\nmoviessl a \\\n  --b\n```\n") == [
        (4, "moviessl a    --b"),
        (1, "python -m benchmarks.x"),
    ]


def contract_names(design: str) -> list[tuple[str, str]]:
    """(module, name) of every name a ``## Contract: ... (`moviessl.X`)`` section's Python block
    lists at the start of a line or after `` ; `` / `` / ``; a bare name after a dotted one on the
    same line (``vidsitu.arg_mapper ; EVENTS``) is read in that name's module."""
    out = []
    for m in re.finditer(r"^## Contract: [^\n]*\(`(moviessl(?:\.\w+)*)`\)\n```python\n(.*?)```", design, re.M | re.S):
        module = m.group(1)
        for line in m.group(2).split("\n"):
            if not line or line[0].isspace():  # an indented line lists attributes of the line above
                continue
            prefix = ""
            for seg in re.split(r"\s+[;/]\s+", line.split("#")[0]):
                name = re.match(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", seg.strip())
                if not name:
                    continue
                name = name.group(0)
                if "." not in name and prefix:
                    name = f"{prefix}.{name}"
                prefix = prefix or name.rpartition(".")[0]
                out.append((module, name))
    return out


def test_every_name_of_a_contract_block_is_in_its_module():
    names = contract_names((ROOT / "docs" / "design.md").read_text(encoding="utf-8"))
    assert len(names) > 20
    assert [f"{module}.{name}" for module, name in names if not _resolves(f"{module}.{name}")] == []


def test_the_contract_reader_finds_names():
    block = "## Contract: x (`moviessl.data`)\n```python\nvidsitu.a(x) -> y ; B ; C\n  .attr\nD: dict  # z ; E\n```\n"
    assert contract_names(block) == [
        ("moviessl.data", "vidsitu.a"),
        ("moviessl.data", "vidsitu.B"),
        ("moviessl.data", "vidsitu.C"),
        ("moviessl.data", "D"),
    ]


def test_every_synth_structure_knob_has_a_row_in_synthmovies_md():
    """docs/synthmovies.md's knob table is where a user reads what a knob stands for and its headroom."""
    from moviessl.synth.cli import STRUCTURE_KNOBS

    table = (ROOT / "docs" / "synthmovies.md").read_text()
    assert [k for k in STRUCTURE_KNOBS if f"| `{k}` |" not in table] == []
