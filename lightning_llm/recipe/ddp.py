"""Hydra multirun + DDP: Lightning starts child processes with the parent's command line, which under `-m`
would run the whole sweep again into new folders (a known Hydra + Lightning trap). A job publishes its
overrides and folder in the environment; a child rebuilds its command line from them."""

from __future__ import annotations

import json

#: Set by a multirun job before Lightning starts its DDP processes: the job's overrides and output folder.
DDP_JOB_ENV = "LIGHTNING_LLM_DDP_JOB"


def ddp_job_spec(overrides: list[str], output_dir: str) -> str:
    """What a multirun job tells its DDP children (the value of DDP_JOB_ENV)."""
    return json.dumps({"overrides": list(overrides), "output_dir": str(output_dir)})


def ddp_child_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """The command line of a DDP child process of a multirun job: that one job, in the job's folder."""
    job = env.get(DDP_JOB_ENV)
    if env.get("LOCAL_RANK", "0") == "0" or not job:
        return argv
    spec = json.loads(job)
    return [
        argv[0],
        *spec["overrides"],
        f"hydra.run.dir={spec['output_dir']}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
