"""The CI recipe for a policy repository (docs/ci/): the shell script validates, tests with
coverage and diffs against the target branch, in a real Git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness.example_policies import EXAMPLES, REPO

SCRIPT = REPO / "docs" / "ci" / "policy-ci.sh"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def policy_repo(tmp_path: Path) -> Path:
    """A repository whose main branch holds the example policies, checked out on a change that
    lets support-agent create issues."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo / "policies")
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "start")
    git(repo, "add", "policies")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "policies")
    git(repo, "checkout", "-q", "-b", "change")
    agents = repo / "policies" / "agents.yaml"
    agents.write_text(
        agents.read_text().replace(
            "tools: [get_me, list_issues, get_issue]\n", "tools: [get_me, list_issues, get_issue, create_issue]\n"
        )
    )
    return repo


def run_ci(repo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", str(SCRIPT), "policies", "main"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_change_whose_test_now_fails_fails_ci_and_still_gets_its_diff(tmp_path: Path) -> None:
    repo = policy_repo(tmp_path)
    finished = run_ci(repo)
    assert finished.returncode == 1  # the suite says support-agent never writes to GitHub
    out = repo / "mandate-ci"
    assert "18 passed, 1 failed" in (out / "test.txt").read_text()
    assert "coverage:" in (out / "test.txt").read_text()
    assert 'failures="1"' in (out / "junit.xml").read_text()
    diff = (out / "diff.md").read_text()
    assert diff.startswith("## Mandate policy diff: policies (")  # the base's copy named as in the repository
    assert "- **support-agent**: tool `github: create_issue`" in diff
    assert "| deny (`tool_not_allowed`) | **allow** (`allowed`) |" in diff


def test_a_change_with_its_test_updated_passes(tmp_path: Path) -> None:
    repo = policy_repo(tmp_path)
    cases = repo / "policies" / "tests" / "missions.yaml"
    text = cases.read_text()
    cases.write_text(
        text.replace(
            "    expect: {decision: deny, reason: tool_not_allowed}\n\n  - name: support-agent reads the GitHub API",
            "    expect: allow\n\n  - name: support-agent reads the GitHub API",
        )
    )
    finished = run_ci(repo)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "19 passed, 0 failed" in finished.stdout


def test_the_github_workflow_runs_the_script_and_posts_the_diff() -> None:
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["policies"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "sh ci/policy-ci.sh policies" in commands and "gh pr comment" in commands
    assert workflow["permissions"]["pull-requests"] == "write"
