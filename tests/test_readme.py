"""The README's commands and example are the ones that CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_commands = [line for block in bash_blocks(readme) for line in block.splitlines() if "pytest" in line]
    assert len(test_commands) == 1, test_commands
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_commands[0].strip() in [line.strip() for line in ci_lines]


def test_readme_usage_example_runs(monkeypatch, tmp_path):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "model.learn(100_000)" in example
    # Same code at a tiny budget, in a scratch directory.
    monkeypatch.chdir(tmp_path)
    example = example.replace("model.learn(100_000)", "model.learn(64)").replace("n_steps=1024", "n_steps=64")
    example = example.replace("n_eval_episodes=10", "n_eval_episodes=1")
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "ncdpo_pendulum.zip").exists()
