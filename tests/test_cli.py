"""Every command answers -h/--help with each option's type, default and meaning, all read from the options
dataclass (field metadata); --help shows a --config file's values as the defaults; unknown options stay an error."""
import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ms_gpt.config import option_help, parse_config

ROOT = Path(__file__).resolve().parents[1]


def _options_class(command: str):
    if command == "pretrain":
        from ms_gpt.recipes.pretrain import PretrainArguments as cls
    elif command == "finetune":
        from ms_gpt.recipes.finetune import FinetuneArguments as cls
    elif command == "generate":
        from ms_gpt.generate import GenerateArguments as cls
    elif command == "evaluate":
        from ms_gpt.evaluation import EvaluateArguments as cls
    elif command == "demo":
        from ms_gpt.recipes.paradigm import DemoArguments as cls
    elif command == "export":
        from ms_gpt.export import ExportArguments as cls
    else:
        from ms_gpt.chat import ChatArguments as cls
    return cls


def _help(command: str, argv: list, capsys) -> str:
    main = importlib.import_module(f"ms_gpt.{command}").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["pretrain", "finetune", "generate", "chat", "evaluate", "demo", "export"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option_with_type_default_and_meaning(command, flag, capsys):
    text = _help(command, [flag], capsys)
    cls = _options_class(command)
    assert text.startswith("usage: ")
    for spec in dataclasses.fields(cls):
        meaning = option_help(cls, spec.name)
        assert meaning, f"{cls.__name__}.{spec.name} has no metadata help"
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        shown = ",".join(default) if isinstance(default, list) else default
        line = f"  --{spec.name} "
        entry = next(i for i, row in enumerate(text.splitlines()) if row.startswith(line))
        row, below = text.splitlines()[entry], text.splitlines()[entry + 1]
        assert f"(default: {shown!r})" in row if isinstance(shown, str) else f"(default: {shown})" in row, row
        assert below.strip() == meaning
        assert row.split()[1].startswith(("int", "float", "str", "bool", "list")), row  # the type is named


def test_help_with_config_shows_the_config_values(capsys):
    text = _help("finetune", ["--config", "configs/sentiment_rt.yaml", "--help"], capsys)
    assert "--output_dir str  (from config: 'runs/sentiment_rt')" in text
    text = _help("finetune", ["--config", "configs/sentiment_rt.yaml", "--help", "--output_dir=elsewhere"], capsys)
    assert "--output_dir str  (from command line: 'elsewhere')" in text  # it wins over the file, as when running
    text = _help("finetune", ["--task", "dialogue", "--help"], capsys)  # the dialogue recipe's own options
    assert "--pretrain_files list of str (comma-separated)" in text


def test_unknown_options_keep_their_error_even_with_help():
    from ms_gpt.recipes.pretrain import PretrainArguments

    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        parse_config(PretrainArguments, ["--help", "--bogus=1"])
    from ms_gpt.generate import main

    with pytest.raises(ValueError, match="--model is required"):
        main(["--prompt", "x"])


def test_python_m_help_exits_zero():
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    result = subprocess.run([sys.executable, "-m", "ms_gpt.pretrain", "--help"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m ms_gpt.pretrain ")
    assert "--resume_from_checkpoint str or None  (default: None)" in result.stdout


def test_console_scripts_do_what_python_m_does():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = ["pretrain", "finetune", "generate", "chat", "evaluate", "export", "serve"]
    assert scripts == {f"ms-gpt-{c}": f"ms_gpt.cli:{c}" for c in commands}
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    # what the installed `ms-gpt-generate` wrapper runs: sys.exit(<entry point>())
    wrapper = "import sys; from ms_gpt.cli import generate; sys.argv[0] = 'ms-gpt-generate'; sys.exit(generate())"
    script, module = (subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
                      for cmd in ([sys.executable, "-c", wrapper, "--help"],
                                  [sys.executable, "-m", "ms_gpt.generate", "--help"]))
    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert script.stdout == module.stdout.replace("usage: python -m ms_gpt.generate ", "usage: ms-gpt-generate ", 1)
    assert "--max_new_tokens" in script.stdout
    bad = subprocess.run([sys.executable, "-c", wrapper, "--prompt", "x"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --model is required")


def test_entry_file_run_as_a_script_finds_the_project(tmp_path):
    """msrun takes a script path (`msrun ... ms_gpt/pretrain.py`): ms_gpt/_launch.py puts the project root first
    (else ms_gpt/ is, and ms_gpt/tokenizers.py shadows the `tokenizers` library)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(ROOT / "ms_gpt" / "evaluate.py"), "--help"], capture_output=True,
                            text=True, env=dict(env, GLOG_v="3"), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--task" in result.stdout
