"""README.md: every ```python block runs, in order, in one namespace, as a reader would paste them.

`sdscratch.pretrained(name)` is pointed at saved tiny random pipelines (sdscratch.demo) so that the snippets
exercise the real loading and calling code in seconds, whether or not the shipped weights are present.
"""

import collections
import importlib
import importlib.util
import os
import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import sdscratch
from sdscratch.demo import tiny_random_pipeline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def tiny_model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    folders = {}
    for name in ("cartoon-faces", "digits"):
        folders[name] = str(root / name)
        tiny_random_pipeline(seed=0, name=name).save_pretrained(folders[name])
    return folders


def test_readme_has_the_promised_sections():
    blocks = python_blocks(README.read_text())
    code = "\n".join(blocks)
    assert len(blocks) >= 6
    for needle in ("from_pretrained", "image=", "mask_image=", "interpolate(", "from_config(pipe.scheduler.config)"):
        assert needle in code, needle
    assert len(blocks[0].strip().splitlines()) <= 12  # the short first example stays short


def test_readme_python_blocks_run(tiny_model_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(sdscratch, "pretrained", lambda name="cartoon-faces": tiny_model_folders[name])
    monkeypatch.chdir(tmp_path)  # files the snippets save land here
    namespace = {"__name__": "__readme__"}
    for index, block in enumerate(python_blocks(README.read_text())):
        try:
            exec(compile(block, f"README.md python block {index}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"README python block {index} failed:\n{block}") from error
        if "pipe" in namespace:
            namespace["pipe"].set_progress_bar_config(disable=True)

    assert Image.open(tmp_path / "face.png").size == (64, 64)
    assert len(namespace["images"]) == 1 and namespace["images"][0].size == (64, 64)
    assert len(namespace["frames"]) == 8 and Image.open(tmp_path / "morph.gif").n_frames == 8
    assert type(namespace["pipe"].scheduler).__name__ == "EulerMaruyamaScheduler"
    assert len(namespace["eights"]) == 8 and namespace["eights"][0].size == (16, 16)


def check_commands_parse(text: str, parsed: list | None = None) -> int:
    """Runs every `training/*.py`, `python -m sdscratch.evaluate` / `.data.cartoon_faces` and `sdscratch` command of
    a shell text (backslash
    continuations joined, `${VAR:-default}` expanded to its default, `"${ARRAY[@]}"` to the array's first
    definition in the text, or to nothing, `"$VAR"` to its first definition, comments skipped)
    through its script's own argument parser; an unknown or renamed flag raises SystemExit. Returns how many
    commands were checked; `parsed` (a list) gets each `training/*.py` command's (script, parsed arguments)."""
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text.replace("\\\n", " "))
    arrays = {}  # a flag array's first definition (NAME=(...)) is its default; an undefined one is empty
    for name, value in re.findall(r"^(\w+)=\((.*)\)\s*$", text, flags=re.MULTILINE):
        arrays.setdefault(name, value)
    text = re.sub(r'"?\$\{(\w+)\[@\]\}"?', lambda m: arrays.get(m.group(1), ""), text)
    scalars = {}  # likewise a variable's first definition (NAME=value) is its value: "$EXPORTED" is a folder
    for name, value in re.findall(r"^(\w+)=([^\s(]\S*)\s*$", text, flags=re.MULTILINE):
        scalars.setdefault(name, value.strip('"'))
    text = re.sub(r"\$(\w+)\b", lambda m: scalars.get(m.group(1), m.group(0)), text)
    checked = 0
    for line in text.splitlines():
        argv = shlex.split(line, comments=True)
        while argv and re.fullmatch(r"\w+=\S*", argv[0]):  # VAR=value prefixes
            argv = argv[1:]
        if argv[:2] == ["accelerate", "launch"]:
            argv = argv[2:]
        elif argv[:1] == ["python"]:
            argv = argv[1:]
        if argv[:2] in (["-m", "sdscratch.evaluate"], ["sdscratch", "evaluate"]):
            module, args = importlib.import_module("sdscratch.evaluate"), argv[2:]
        elif argv[:2] in (["-m", "sdscratch.data.cartoon_faces"], ["sdscratch", "faces"]):
            module, args = importlib.import_module("sdscratch.data.cartoon_faces"), argv[2:]
        elif argv[:1] == ["sdscratch"]:  # generate, models
            module, args = importlib.import_module("sdscratch.cli"), argv[1:]
        elif argv and argv[0].startswith("training/"):
            spec = importlib.util.spec_from_file_location(f"command_{checked}", ROOT / argv[0])
            module, args = importlib.util.module_from_spec(spec), argv[1:]
            spec.loader.exec_module(module)
        else:
            continue
        parse = module.build_parser().parse_args if module.__name__ == "sdscratch.cli" else module.parse_args
        namespace = parse(args)  # SystemExit (argparse error) fails the test
        if parsed is not None and argv[0].startswith("training/"):
            parsed.append((argv[0], namespace))
        checked += 1
    return checked


def test_readme_training_commands_parse():
    """Every training, export and evaluation command in the README has flags its parser knows."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert check_commands_parse("\n".join(blocks)) >= 11  # 5 training / export / evaluation, 6 `sdscratch`


def test_readme_training_commands_are_the_recipes():
    """The README says its training commands trained the shipped model: each has the recipe's settings, all but
    where it writes and how often it checkpoints and validates (its decoder stage once lacked the recipe's --seed 1:
    another decoder)."""
    readme, recipe = [], []
    check_commands_parse(
        "\n".join(re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE)), readme
    )
    check_commands_parse((ROOT / "training" / "recipes" / "cartoon-faces.sh").read_text(), recipe)
    where = {"output_dir", "pretrained_vae_model_name_or_path", "checkpointing_steps", "checkpoints_total_limit"}
    where |= {"validation_steps", "resume_from_checkpoint", "command"}

    def settings(commands):  # stage (script, its n-th run) -> the flags that decide the weights
        stages, seen = {}, collections.Counter()
        for script, args in commands:
            if script != "training/export_pretrained.py":
                seen[script] += 1
                stages[script, seen[script]] = {k: v for k, v in vars(args).items() if k not in where}
        return stages

    readme, recipe = settings(readme), settings(recipe)
    assert len(readme) == 4 and set(readme) <= set(recipe)
    for stage, flags in readme.items():
        assert flags == recipe[stage], stage


@pytest.mark.parametrize("recipe", sorted((ROOT / "training" / "recipes").glob("*.sh")), ids=lambda p: p.name)
def test_recipe_commands_parse(recipe):
    """The shipped models' recipes too: a renamed flag fails here, not an hour into a reproduction."""
    assert check_commands_parse(recipe.read_text()) >= 3  # train, export, evaluate


def test_recipe_flag_arrays_are_checked():
    """The recipe's flag array reaches the parser: a misspelt flag inside it fails the check."""
    text = "FLAGS=(--text_encoder_freeze_stepz 1000)\n"
    text += 'python training/train_unet.py --dataset_name x --output_dir y \\\n    "${FLAGS[@]}"\n'
    with pytest.raises(SystemExit):
        check_commands_parse(text)
    assert check_commands_parse(text.replace("stepz", "steps")) == 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="the recipes are bash scripts")
@pytest.mark.parametrize("clip", ["0", "1"])
def test_recipe_export_tells_every_trained_part(clip, tmp_path):
    """The cartoon-faces recipe as a user runs it (its commands echoed, not run): the export passes the three VAE stages,
    and with CLIP=1 the CLIP the UNet stage used (--text_encoder_path), as docs/evaluation.md says."""
    for command in ("accelerate", "python"):
        (tmp_path / command).write_text('#!/bin/sh\necho "$@"\n')
        (tmp_path / command).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "CLIP": clip, "OUT": "out"}
    lines = subprocess.run(
        ["bash", str(ROOT / "training" / "recipes" / "cartoon-faces.sh")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    (command,) = [line.split() for line in lines if line.startswith("training/export_pretrained.py")]
    unet = [line.split() for line in lines if line.startswith("launch training/train_unet.py")][0]
    spec = importlib.util.spec_from_file_location("export_pretrained", ROOT / command[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(command[1:])
    assert args.model_path == unet[unet.index("--output_dir") + 1]
    assert args.vae_path == ["out/vae", "out/vae-decoder", "out/vae-decoder-mse"]
    assert args.text_encoder_path == ("out/clip" if clip == "1" else None)
    # the default run replaces the shipped model it reproduces; the CLIP=1 variant never overwrites it, and each
    # run evaluates the model it exported
    exported = os.path.join(args.output_root, args.name)
    if clip == "1":
        assert exported == "out/export/cartoon-faces"
    else:
        assert os.path.samefile(args.output_root, ROOT / "sdscratch" / "pretrained")
    evaluations = [line.split() for line in lines if line.startswith("-m sdscratch.evaluate")]
    assert len(evaluations) == 4
    evaluated = exported if clip == "1" else "sdscratch/pretrained/cartoon-faces"
    assert [e[e.index("--model_path") + 1] for e in evaluations] == [evaluated] * 4
    # every evaluation section of the shipped card is one the recipe writes again (the editing ones were missing:
    # a reproduced card lost them), with the same flags but which folder it reads and where it writes
    card = (ROOT / "sdscratch" / "pretrained" / "cartoon-faces" / "README.md").read_text()
    produced = [line.split()[2:] for line in card.splitlines() if line.startswith("python -m sdscratch.evaluate ")]

    def flags(argv):
        paths = {"--model_path", "--output_dir"}
        return [a for i, a in enumerate(argv) if a not in paths and (i == 0 or argv[i - 1] not in paths)]

    assert len(produced) == 4
    assert sorted(map(flags, produced)) == sorted(map(flags, [e[1:] for e in evaluations]))


SCRIPTS = sorted(
    str(path.relative_to(ROOT))
    for folder in ("training", "examples", "benchmarks")
    for path in (ROOT / folder).glob("*.py")
)


@pytest.mark.parametrize("script", SCRIPTS + ["-m sdscratch.evaluate"])
def test_script_help(script, monkeypatch, capsys):
    """`--help` of every script prints its usage and exits 0, and runs nothing else (argparse formats help strings
    with %: a bare "%" in one made `train_unet.py --help` crash; two benchmarks had no parser and ran in full)."""
    monkeypatch.setattr("sys.argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        if script.startswith("-m "):  # already imported by the tests: its main() is what __main__ runs
            importlib.import_module(script[3:]).main()
        else:  # as `python <script>`: its folder first on sys.path (benchmarks import each other)
            monkeypatch.syspath_prepend(str((ROOT / script).parent))
            runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_readme_examples_table_lists_every_example_and_which_take_model_path():
    """Every examples/*.py is in the README's table, and exactly the one the README names lacks --model_path."""
    text = README.read_text()
    without_model_path = set()
    for path in sorted((ROOT / "examples").glob("*.py")):
        assert re.search(rf"^\| `{re.escape(path.name)}[ `]", text, flags=re.MULTILINE), path.name
        if '"--model_path"' not in path.read_text():
            without_model_path.add(path.name)
    assert without_model_path == {"cartoon_faces_grid.py"}
    assert "all but `cartoon_faces_grid.py`" in text


def test_the_package_data_carries_the_shipped_models_and_their_card_images():
    """setup.cfg's `package_data` globs (what `pip install .` copies) cover every file of the shipped model
    folders that loading reads and every image their model cards show."""
    import configparser
    import glob

    root = Path(__file__).resolve().parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["sdscratch"].split(",")]
    packaged = {
        Path(path).resolve()
        for pattern in patterns
        for path in glob.glob(str(root / "sdscratch" / pattern), recursive=True)
    }
    for card in (root / "sdscratch" / "pretrained").glob("*/README.md"):
        for image in re.findall(r"\]\(\./([^)]+\.png)\)", card.read_text()):
            assert (card.parent / image).resolve() in packaged, (card, image)
        for path in card.parent.rglob("*"):
            if path.suffix in (".json", ".safetensors"):
                assert path.resolve() in packaged, path
