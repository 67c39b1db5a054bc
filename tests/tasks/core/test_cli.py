"""Every CLI's `--help`: a whole-sentence description, a description for each flag and positional, the choices of
fixed-choice flags. The stage CLIs (tyro, tasks/core/cli.py) still parse real arguments."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re

import pytest

from tasks.core import cli, params

# the stage CLIs (tasks/core/cli.py, tyro): module -> the params dataclass whose fields are its flags
STAGES = {
    "tasks.download": params.DownloadParams,
    "tasks.render": params.RenderParams,
    "tasks.convert": params.ConvertParams,
    "tasks.stats": params.StatsParams,
    "tasks.train": params.TrainParams,
    "tasks.verify": params.VerifyParams,
    "tasks.select_checkpoint": params.SelectParams,
    "tasks.promote": params.PromoteParams,
}
# the argparse CLIs: module -> its subcommands
ARGPARSE = {
    "tasks.maintenance": [],
    "tasks.rollback": ["history", "rollback"],
    "tasks.run_report": [],
    "tasks.serve": [],
    "tasks.policy.tokenizer": [],
    "tasks.flows.task_specs": ["derive", "check"],
    "tasks.flows.pipeline": [],
    "tasks.sim.replay_worker": [],
    "tools.demo_run": [],
    "tools.task_coverage": [],
    "tools.dag_diagram": [],
}
# (module, subcommand argv): each CLI, and each subcommand of those that have them
CASES = [(m, []) for m in STAGES] + [(m, sub) for m, subs in ARGPARSE.items() for sub in ([], *([s] for s in subs))]

CHOICES = {
    "--device": ("auto", "cpu", "gpu"),
    "--preset": ("tiny", "lora", "full"),
    "--model": ("pi0", "pi05"),
    "--source": ("motionplanning", "hub", "s3"),
    "--profile": ("production", "demo"),
}
ADDED_BY_TYRO = re.compile(r"\((default: .*?|required|fixed to: .*?)\)")
BOX = re.compile(r"^\s*│|│\s*$")


@dataclasses.dataclass
class Help:
    usage: str
    description: str
    entries: dict[str, str]  # flag or positional -> its help text (the first line's rest and its continuation lines)
    lines: dict[str, str]  # flag or positional -> the whole entry (invocation and help)


def parse_help(text: str) -> Help:
    """argparse's help and tyro's boxed help alike: the usage paragraph, the description, then sections of entries
    whose first line starts at the section's entry indent and whose continuation lines are indented further."""
    raw_lines = text.splitlines()
    lines = []
    for i, raw in enumerate(raw_lines):
        if re.match(r"^\s*[╭╰]", raw):  # a UTF-8 box's top (with the section's title) or bottom
            lines.append("<section>")
        elif i + 1 < len(raw_lines) and re.match(r"^\s*-{3,}\s*$", raw_lines[i + 1]):
            lines.append("<section>")  # tyro's ASCII form (stdout not UTF-8): the title, underlined with dashes
        elif re.match(r"^\s*-{3,}\s*$", raw):
            continue
        else:
            lines.append(BOX.sub("", raw).rstrip())
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if not line.strip():
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    paragraphs = [p for p in paragraphs if p]
    assert paragraphs[0][0].startswith("usage:"), text
    usage = " ".join(" ".join(paragraphs[0]).split())
    description = " ".join(" ".join(paragraphs[1]).split()) if not _is_section(paragraphs[1][0]) else ""
    entries: dict[str, list[str]] = {}
    whole: dict[str, list[str]] = {}
    indent = None
    current = None
    in_section = False
    for line in lines:
        if _is_section(line):
            in_section, indent, current = True, None, None
            continue
        if not in_section or not line.strip():
            continue
        lead = len(line) - len(line.lstrip())
        if indent is None:
            indent = lead
        if lead == indent:
            invocation, _, rest = line.strip().partition("  ")
            names = re.findall(r"--[\w-]+", invocation) or [invocation.split()[0]]
            current = names
            for name in names:
                entries[name] = [rest.strip()]
                whole[name] = [line.strip()]
        elif current:
            for name in current:
                entries[name].append(line.strip())
                whole[name].append(line.strip())
    return Help(
        usage,
        description,
        {k: " ".join(" ".join(v).split()) for k, v in entries.items()},
        {k: " ".join(v) for k, v in whole.items()},
    )


def _is_section(line: str) -> bool:
    return line == "<section>" or bool(re.match(r"^[A-Za-z][\w ]*:$", line))


def run_help(module: str, sub: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    main = importlib.import_module(module).main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*sub, "--help"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize(("module", "sub"), CASES, ids=[" ".join([m, *s]) for m, s in CASES])
def test_help_describes_every_argument(module, sub, capsys, monkeypatch):
    text = run_help(module, sub, capsys, monkeypatch)
    help_ = parse_help(text)

    # the description: a whole sentence (the module docstring's first paragraph, or the subcommand's own)
    assert help_.description.endswith("."), f"{module} {sub}: description cut or missing: {help_.description!r}"
    assert len(help_.description) > 20
    if not sub:
        assert help_.description == cli.first_paragraph(importlib.import_module(module).__doc__)

    assert "-h" in help_.entries or "--help" in help_.entries, text
    for name, description in help_.entries.items():
        if name in ("-h", "--help"):
            continue
        assert ADDED_BY_TYRO.sub("", description).strip(" ;,"), f"{module} {sub}: {name} has no description:\n{text}"

    # every flag of the parser is in the table
    expected = set(re.findall(r"--[\w-]+", help_.usage)) - {"--help"}
    if module in STAGES:
        expected |= {"--root"} | {"--" + f.name.replace("_", "-") for f in dataclasses.fields(STAGES[module])}
    missing = expected - set(help_.entries)
    assert not missing, f"{module} {sub}: {sorted(missing)} not described:\n{text}"

    for flag, choices in CHOICES.items():
        if flag in help_.lines:
            for choice in choices:
                assert re.search(rf"\b{choice}\b", help_.lines[flag]), f"{module}: {flag} does not show {choice}"


def test_fixed_choice_flags_show_their_choices(capsys, monkeypatch):
    """The flags with a fixed set of values list it, as a Literal the parser checks."""
    seen = {}
    for module, flags in (
        ("tasks.render", ["--device"]),
        ("tasks.verify", ["--device"]),
        ("tasks.train", ["--preset", "--model"]),
        ("tasks.download", ["--source"]),
    ):
        entries = parse_help(run_help(module, [], capsys, monkeypatch)).lines
        for flag in flags:
            assert "{" + ",".join(CHOICES[flag]) + "}" in entries[flag], entries[flag]
            seen[module, flag] = True
    assert len(seen) == 5
    # the Literals and the constant tuples validate() checks are the same values
    assert params.DEVICES == CHOICES["--device"] and params.PRESETS == CHOICES["--preset"]
    assert params.MODELS == CHOICES["--model"] and params.SOURCES == CHOICES["--source"]


TRAIN_INPUTS = {"dataset": False, "stats": False, "holdout": "optional"}


def _parse(params_cls, inputs, args):
    import tyro

    return tyro.cli(cli.arguments(params_cls, inputs), args=args)


def test_stage_arguments_parse_into_params():
    base = ["--env-id", "PickCube-v1", "--dataset", "file:///d", "--stats", "file:///s"]
    args = _parse(
        params.TrainParams,
        TRAIN_INPUTS,
        [
            *base,
            "--root",
            "file:///r",
            "--wandb",
            "--steps",
            "7",
            "--learning-rate",
            "1e-4",
            "--preset",
            "lora",
            "--model",
            "pi05",
        ],
    )
    assert args.root == "file:///r" and args.dataset == "file:///d" and args.holdout == ""
    assert args.params == params.TrainParams(
        env_id="PickCube-v1", wandb=True, steps=7, learning_rate=1e-4, preset="lora", model="pi05"
    )
    assert _parse(params.TrainParams, TRAIN_INPUTS, [*base, "--no-wandb"]).params.wandb is False
    assert _parse(params.TrainParams, TRAIN_INPUTS, base).params.wandb is False
    assert _parse(params.VerifyParams, {}, ["--env-id", "PickCube-v1", "--no-harness"]).params.harness is False
    several = _parse(params.ConvertParams, {"rendered": True}, ["--env-id", "PickCube-v1", "--rendered", "a", "b"])
    assert several.rendered == ["a", "b"]
    render = _parse(
        params.RenderParams,
        {"demos": False},
        ["--env-id", "PickCube-v1", "--demos", "x", "--shard-stop", "-1", "--shard-start", "3"],
    )
    assert (render.params.shard_start, render.params.shard_stop) == (3, -1)


def test_stage_cli_refuses_bad_arguments(capsys, monkeypatch, tmp_path):
    from tasks import convert, render
    from tasks.core.specs import SpecError

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SpecError, match="NoSuchEnv-v9"):  # validated by the stage, before any work
        convert.main(["--env-id", "NoSuchEnv-v9", "--rendered", "file:///nowhere", "--root", tmp_path.as_uri()])
    with pytest.raises(SystemExit) as exit_info:  # not one of the choices: the parser says which are
        render.main(["--env-id", "PickCube-v1", "--demos", "x", "--device", "tpu", "--root", tmp_path.as_uri()])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tpu" in err and all(c in err for c in ("auto", "cpu", "gpu"))
    with pytest.raises(SystemExit) as exit_info:  # a required input left out
        convert.main(["--env-id", "PickCube-v1", "--root", tmp_path.as_uri()])
    assert exit_info.value.code == 2 and "--rendered" in capsys.readouterr().err


def test_stage_cli_prints_only_the_result_on_stdout(capsys):
    @dataclasses.dataclass(frozen=True)
    class Params:
        env_id: str  # the task
        flag: bool = False  # a switch

    class Result:
        def to_dict(self):
            return {"uri": "file:///x", "cache_hit": False}

    calls = []

    def run(p, root, demos):
        print("upstream progress")  # what upstream tools do: it must not reach stdout
        calls.append((p, root, demos))
        return Result()

    main = cli.cli("A stage.\n\nMore text.", Params, run, inputs={"demos": False})
    assert main(["--env-id", "E", "--flag", "--demos", "file:///d", "--root", "file:///r"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [json.dumps({"uri": "file:///x", "cache_hit": False})]
    assert "upstream progress" in err
    assert calls == [(Params(env_id="E", flag=True), "file:///r", "file:///d")]


def test_first_paragraph():
    doc = "stage: does a thing\nover two lines.\n\nDetails."
    assert cli.first_paragraph(doc) == "stage: does a thing over two lines."
