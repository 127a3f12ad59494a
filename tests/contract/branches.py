"""Branch set-up shared by the contract tests."""

from __future__ import annotations

import lakefs


def committed_branch(repo: lakefs.Repository, name: str, files: dict[str, bytes]) -> lakefs.Branch:
    """A branch off the default branch with files committed on it. The message names the branch so two such
    branches with the same files get distinct commits (commit ids are content addresses in lakeFS too)."""
    branch = repo.branch(name).create(repo.properties.default_branch)
    for path, data in files.items():
        branch.object(path).upload(data)
    branch.commit(f"write {', '.join(files)} on {name}")
    return branch
